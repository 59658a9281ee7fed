"""The pages: the live dashboard of one host, and the fragments it polls without WebSockets.

Both show the hub's current frame for the host (:mod:`dashboard.hub`); a host this process
has not heard yet is loaded from its latest stored snapshot. A host nobody knows is a 404.
A host's page is ``/hosts/NAME/``; ``/?host=NAME`` (how the history pages name a host) is
redirected there.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import redirect, render
from django.views.decorators.gzip import gzip_page

from dashboard import fragments as frag
from dashboard.hub import PACES, get_hub, stale_after_s
from dashboard.methods import read_only
from monitoring.models import Host

#: Host names are at most this long (Host.name).
MAX_HOST = 255
#: A polling page asks for PCIe of at most this many GPUs at once.
MAX_DETAILS = 64


def _known_hosts() -> list[str]:
    """The stored host names; the hub forgets those deleted since it heard them."""
    known = list(Host.objects.order_by("name").values_list("name", flat=True))
    get_hub().forget_unstored(known)
    return known


def default_host(known: list[str]) -> str:
    """This machine when it reports (or nothing does yet), else the first host that does."""
    if settings.HOST_NAME in known or not known:
        return settings.HOST_NAME
    hub_hosts = sorted(get_hub().hosts)
    return hub_hosts[0] if hub_hosts else known[0]


def frame_for(host: str) -> frag.Frame:
    """The host's current frame: heard live, else from the database, else "waiting"."""
    hub = get_hub()
    state = hub.load_host(host)
    frame = hub.frame_now(host) if state is not None else None
    if frame is None:
        frame = frag.render_frame(
            None,
            None,
            host=host,
            version=0,
            status=frag.status_for(None, stale_after_s()),
            alerts=[],
            hosts=hub.summaries(host),
        )
    return frame


def is_known(host: str, known: list[str] | None = None) -> bool:
    """True for a host that reports or reported here (stored, or heard live lately by this
    process), and for this machine, which may not have reported yet. A silent host stays known
    (stale), so only a name nobody ever reported under, or one deleted in admin, is unknown.
    ``known``: the stored host names when the caller has them (else one query)."""
    if len(host) > MAX_HOST:
        return False
    if host == settings.HOST_NAME or get_hub().heard_live(host):
        return True
    if known is not None:
        return host in known
    return Host.objects.filter(name=host).exists()


def unknown_host_message(host: str) -> str:
    """What a page or a socket says of a host nobody reports under."""
    return f"No host named {host[:80]!r} reports to this Hoof Hearted."


def _resolve(host: str | None) -> tuple[str, list[str]]:
    known = _known_hosts()
    if host is None:
        return default_host(known), known
    if not is_known(host, known):
        raise Http404(unknown_host_message(host))
    return host, known


@read_only
@gzip_page  # the figures are public to anyone who may see the page: no secret to leak (BREACH)
def dashboard(request: HttpRequest, host: str | None = None) -> HttpResponse:
    asked = request.GET.get("host", "").strip() if host is None else ""
    if asked:  # one address per host's page; an unknown host is the 404 its page would be
        _resolve(asked)
        return redirect("dashboard:host", host=asked)
    host, known = _resolve(host)
    if len(known) > 1:
        get_hub().load_others(known)  # for the overview of every host
    frame = frame_for(host)
    hosts = sorted(set(known) | set(get_hub().hosts) | {host})
    return render(
        request,
        "dashboard/index.html",
        {
            "host": host,
            "hosts": hosts,
            "frame": frame,
            "paces": list(PACES),
            "interval_ms": settings.POLL_INTERVAL_MS,
        },
    )


@read_only
@gzip_page  # the figures are public to anyone who may see the page: no secret to leak (BREACH)
def live_fragments(request: HttpRequest) -> HttpResponse:
    """The polling fallback: the live area as an out-of-band swap, 304 while unchanged."""
    host, _known = _resolve(request.GET.get("host") or None)
    get_hub().watched_by_poll(host)
    frame = frame_for(host)
    # GPUs whose PCIe detail the polling page has open (unknown ones are ignored)
    get_hub().want_pcie(host, request.GET.getlist("pcie")[:MAX_DETAILS])
    etag = f'"{frame.version}-{hash(frame.layout) & 0xFFFFFFFF:x}"'
    # gzip_page weakens the ETag (W/"…") when it compresses: either form means unchanged
    if request.headers.get("If-None-Match", "").removeprefix("W/") == etag:
        return HttpResponseNotModified(headers={"ETag": etag})
    response = HttpResponse(frame.body, content_type="text/html; charset=utf-8")
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache"
    return response


@read_only
@gzip_page  # the figures are public to anyone who may see the page: no secret to leak (BREACH)
def history(request: HttpRequest) -> HttpResponse:
    """The history page of a host (``?host=``) or one of its GPUs (``&gpu=``): charts over a
    range and the GPU process sessions on the same time axis (:mod:`dashboard.history_page`).
    An unknown host or GPU is a 404; a bad range is the page with the message and a 400."""
    from dashboard.history_page import build_page  # it uses this module's host helpers

    page = build_page(request.GET)
    return render(
        request,
        "dashboard/history.html",
        {"page": page, "host": page.host, "hosts": page.hosts},
        status=400 if page.error else 200,
    )
