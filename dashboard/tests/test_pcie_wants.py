"""PCIe throughput is read where someone looks at it: a viewer opening a GPU's "PCIe and
link" detail, a polling page with it open, or a ``/metrics`` scrape makes the host's collector
read PCIe on its next slow ticks; nobody looking, it stays off (its own tier here: 0, off).

Both deployments: the collector inside the server (``manage.py serve``: the hub hands the
want to the sampler) and apart (``manage.py collect``: through Redis, to the channel the
worker's publisher receives from), on the replayed H100 capture."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from dashboard.consumers import Counters
from dashboard.embedded import HubPublisher
from dashboard.hub import get_hub
from dashboard.tests.live_helpers import captured, message
from dashboard.tests.test_live_consumer import HOST, connect, publish, run, until_listening
from monitoring.telemetry.host import HostSampler, read_host_info
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.select import SourceOptions, open_gpu_source
from monitoring.tests.conftest import H100
from monitoring.worker.publish import SnapshotPublisher
from monitoring.worker.wants import WantReceiver, want_message

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"  # the captured H100
CAPTURED_TX = 9328 * 1024  # bytes/s, the capture's nvmlDeviceGetPcieThroughput(TX)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_layer")]


@pytest.fixture
def sampler():
    """The collector's sampler on the H100 capture, PCIe throughput off unless wanted."""
    opened = open_gpu_source(
        "replay", SourceOptions(replay_dir=H100, replay_state="load", pcie_interval_ms=0)
    )
    sampler = Sampler(
        opened.source,
        host_info=read_host_info(),
        host_sampler=HostSampler(),
        no_source=opened.no_source,
    )
    sampler.sample(slow=True)  # the first reading: PCIe not read, nobody looks
    yield sampler
    sampler.close()


def pcie_tx(sampler: Sampler, *, slow: bool = True) -> float | None:
    return sampler.sample(slow=slow).gpus[0].pcie.tx_bytes_per_s


@pytest.fixture
def worker_publisher(sampler):
    """The ``collect`` worker's publisher on its own Redis connection, listening for wants."""
    port = os.environ.get("TEST_REDIS_PORT")
    if not port:
        pytest.skip("needs the Redis that ./scripts/test starts")
    from channels_redis.core import RedisChannelLayer

    publisher = SnapshotPublisher(
        HOST, layer=RedisChannelLayer(hosts=[f"redis://127.0.0.1:{port}/0"])
    )
    publisher.listen_for_wants(sampler)
    yield publisher
    publisher.close()


async def watching():
    """A viewer of HOST's page, its whole first frame received."""
    viewer = await connect()
    await until_listening()
    await publish(captured("load", HOST))
    await viewer.receive_from(timeout=5)
    return viewer


async def until(condition, what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")


def test_the_card_has_a_pcie_detail_named_for_its_gpu_outside_the_fragments_a_tick_replaces():
    async def scenario():
        viewer = await connect()
        await until_listening()
        await publish(captured("load", HOST))
        whole = await viewer.receive_from(timeout=5)
        assert '<details class="pcie-detail' in whole and f'data-gpu="{UUID}"' in whole
        assert "PCIe and link" in whole and 'id="gpu-0-pcie"' in whole
        # the capture's throughput (read at the first tick), both ways
        assert "20.2 MiB/s" in whole and "9.1 MiB/s" in whole
        await viewer.disconnect()

    run(scenario)


def test_opening_the_detail_reaches_the_worker_through_redis_and_its_next_slow_tick_reads_pcie(
    sampler, worker_publisher
):
    assert pcie_tx(sampler) is None  # nobody looks: not read

    async def scenario():
        viewer = await watching()
        details = Counters.details
        await viewer.send_to(text_data=json.dumps({"pcie": UUID, "open": True}))
        await until(lambda: worker_publisher.wants.applied == 1, "the worker got the want")
        assert Counters.details == details + 1
        await viewer.disconnect()

    run(scenario)
    assert pcie_tx(sampler, slow=False) is None  # a hot tick never pays 41 ms
    assert pcie_tx(sampler) == CAPTURED_TX


def test_a_detail_of_a_gpu_the_host_does_not_have_is_ignored_and_counted(sampler):
    get_hub().wants.attach(HOST, WantReceiver(sampler))

    async def scenario():
        viewer = await watching()
        ignored = Counters.ignored
        for bad in (
            {"pcie": "GPU-not-here", "open": True},
            {"pcie": UUID, "open": "yes"},
            {"pcie": 7},
        ):
            await viewer.send_to(text_data=json.dumps(bad))
        await asyncio.sleep(0.2)
        assert Counters.ignored == ignored + 3
        assert get_hub().wants.sent == 0
        await viewer.disconnect()

    run(scenario)
    assert pcie_tx(sampler) is None


def test_in_the_embedded_server_an_open_detail_goes_straight_to_the_sampler_and_is_renewed(
    sampler,
):
    publisher = HubPublisher(HOST, get_hub())
    receiver = publisher.listen_for_wants(sampler)
    hub = get_hub()
    hub.wants.renew_s = 0.1  # renewed every 10 s in production

    async def scenario():
        viewer = await watching()
        await viewer.send_to(text_data=json.dumps({"pcie": UUID, "open": True}))
        await until(lambda: receiver.applied == 1, "the sampler was asked")
        await asyncio.sleep(0.15)
        hub.renew_wants()  # the hub's checker does this every second
        assert receiver.applied == 2
        await viewer.send_to(text_data=json.dumps({"pcie": UUID, "open": False}))
        await asyncio.sleep(0.15)
        await until(lambda: not any(v.details for g in hub.viewers.values() for v in g), "closed")
        hub.renew_wants()
        assert receiver.applied == 2  # closed: not asked again
        await viewer.disconnect()

    run(scenario)
    assert pcie_tx(sampler) == CAPTURED_TX  # the want lasts 30 s after the last ask
    publisher.close()
    assert HOST not in hub.wants.local


def test_a_polling_page_with_the_detail_open_asks_too(client, sampler):
    receiver = WantReceiver(sampler)
    get_hub().wants.attach(HOST, receiver)
    get_hub().submit(message(captured("load", HOST), HOST))
    response = client.get(f"/live/fragments?host={HOST}&pcie={UUID}&pcie=GPU-unknown")
    assert response.status_code == 200
    assert receiver.applied == 1 and receiver.unknown == 0
    assert pcie_tx(sampler) == CAPTURED_TX


def test_a_metrics_scrape_makes_the_embedded_collector_read_pcie(client, h100_host, sampler):
    receiver = WantReceiver(sampler)
    get_hub().wants.attach("h100", receiver)
    assert client.get("/metrics").status_code == 200
    assert receiver.applied == 1
    assert client.get("/metrics").status_code == 200  # a scrape 15 s later: still wanted
    assert receiver.applied == 1  # not asked again within 10 s
    assert pcie_tx(sampler) == CAPTURED_TX
    assert b'hoofhearted_web_pcie_wants_total{result="sent"} 1.0' in client.get("/metrics").content


def test_a_metrics_scrape_reaches_a_collect_worker_through_redis(client, h100_host, sampler):
    port = os.environ.get("TEST_REDIS_PORT")
    if not port:
        pytest.skip("needs the Redis that ./scripts/test starts")
    from channels_redis.core import RedisChannelLayer

    publisher = SnapshotPublisher(
        "h100", layer=RedisChannelLayer(hosts=[f"redis://127.0.0.1:{port}/0"])
    )
    receiver = publisher.listen_for_wants(sampler)
    try:
        assert pcie_tx(sampler) is None
        assert client.get("/metrics").status_code == 200
        for _ in range(200):
            if receiver.applied:
                break
            asyncio.run(asyncio.sleep(0.025))
        assert receiver.applied == 1
        assert pcie_tx(sampler) == CAPTURED_TX
    finally:
        publisher.close()


def test_a_want_message_is_checked_before_it_touches_the_sampler(sampler):
    receiver = WantReceiver(sampler)
    assert receiver(want_message(UUID)) is True
    assert receiver(want_message("GPU-elsewhere")) is False and receiver.unknown == 1
    for bad in (
        {"type": "telemetry.want", "what": "everything"},
        {"type": "telemetry.want", "what": "pcie", "gpu": 3},
        {"type": "telemetry.want", "what": "pcie", "seconds": -1},
        {"type": "telemetry.want", "what": "pcie", "seconds": True},
        "pcie",
    ):
        assert receiver(bad) is False
    assert receiver.malformed == 5 and receiver.applied == 1


def test_every_host_name_gives_a_valid_want_channel_of_its_own():
    from channels.layers import BaseChannelLayer

    from monitoring.worker.wants import want_channel

    names = ["gpu-node-01", "gpu box/ü", "x" * 255, "a.b_c-d"]
    channels = [want_channel(name) for name in names]
    layer = BaseChannelLayer()
    for channel in channels:
        assert layer.require_valid_channel_name(channel)
    assert len(set(channels)) == len(names)
    assert channels[0].endswith(".wants.gpu-node-01")  # readable where it can be
