"""The project's settings with the channel layer the live benchmark is told to compare.

``BENCH_CHANNEL_LAYER=core|pubsub`` swaps the Redis layer's backend and keeps its options
(``bench_live.py --layer``); unset, the settings are the project's own.
"""

import os

from hoofhearted.settings import *  # noqa: F403
from hoofhearted.settings import CHANNEL_LAYERS

_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
_choice = os.environ.get("BENCH_CHANNEL_LAYER", "")
if _choice:
    CHANNEL_LAYERS["default"]["BACKEND"] = _BACKENDS[_choice]
    if _choice == "pubsub":  # the pub/sub layer takes neither capacity nor expiry
        for _key in ("capacity", "expiry", "group_expiry", "channel_capacity"):
            CHANNEL_LAYERS["default"].get("CONFIG", {}).pop(_key, None)
