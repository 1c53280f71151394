"""The Celery peer of the task interop tests: a Celery 5.x app on a Redis
broker, configured as the Django services configure theirs, whose tasks
record what they ran in Redis so that a test can see which worker (this one
or a Rust one) ran which task, how often, and with what.

A worker: ``python3 -m celery -A celery_peer worker -Q sms_send_queue ...``
(testkit's ``CeleryWorker`` starts it). A client, the same module run as a
script (testkit's ``celery_peer()``)::

    python3 celery_peer.py send <task> <json-args> [--kwargs JSON] [--queue Q]
                                [--countdown S] [--expires S] [--count N]
    python3 celery_peer.py get <task-id> [--timeout S]
    python3 celery_peer.py fill <task> <count> --queue Q [--args JSON]

Everything comes from the environment:

- ``CELERY_PEER_BROKER``: the broker's ``redis://`` URL (required; the task
  records go to the same Redis).
- ``CELERY_PEER_BACKEND``: the result backend's URL (optional; ``get`` needs it).
- ``CELERY_PEER_VISIBILITY``: kombu's ``visibility_timeout`` in seconds
  (default 3600, kombu's own): how long a delivered, unacknowledged task
  stays in the ``unacked`` hash before a worker's restore puts it back.
- ``CELERY_PEER_RESTORE_INTERVAL``, ``CELERY_PEER_RESTORE_THROTTLE``: kombu's
  ``unacked_restore_interval`` / ``unacked_restore_throttle`` (unset: kombu's
  defaults, 10 s and 10, i.e. a running worker scans for expired deliveries
  about every 100 s; a worker also scans once when it starts).
- ``CELERY_PEER_RECORD``: the Redis list the tasks RPUSH their records to
  (default ``peer:ran``).
- ``CELERY_PEER_SLEEP``: seconds each recording task sleeps before it
  records (default 0), for tests that kill a worker mid-task.
"""

import argparse
import json
import os
import sys
import time

import redis
from celery import Celery
from celery.result import AsyncResult


def _env_float(name, default):
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


try:
    BROKER = os.environ["CELERY_PEER_BROKER"]
except KeyError:
    raise SystemExit("celery_peer: set CELERY_PEER_BROKER to the broker's redis:// URL")
BACKEND = os.environ.get("CELERY_PEER_BACKEND") or None
VISIBILITY = _env_float("CELERY_PEER_VISIBILITY", 3600)
RECORD = os.environ.get("CELERY_PEER_RECORD") or "peer:ran"
SLEEP = _env_float("CELERY_PEER_SLEEP", 0)
# What noop counts (and all it does).
NOOP_DONE = "peer:noop:done"

transport_options = {"visibility_timeout": VISIBILITY}
for _env, _option in [
    ("CELERY_PEER_RESTORE_INTERVAL", "unacked_restore_interval"),
    ("CELERY_PEER_RESTORE_THROTTLE", "unacked_restore_throttle"),
]:
    if os.environ.get(_env, "").strip():
        transport_options[_option] = int(os.environ[_env])

app = Celery("celery_peer", broker=BROKER, backend=BACKEND)
app.conf.update(
    # JSON only, both ways: what the Rust side reads and writes.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # A task is acknowledged after it ran; one at a time per process; a task
    # whose (prefork) process died is requeued rather than acknowledged, and
    # one whose whole worker was killed comes back once the broker's
    # visibility timeout has passed (kombu's restore of `unacked`).
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
    broker_transport_options=transport_options,
    broker_connection_retry_on_startup=True,
)

# One Redis client per process (prefork children get their own).
_redis = {}


def _client():
    pid = os.getpid()
    if pid not in _redis:
        _redis.clear()
        _redis[pid] = redis.Redis.from_url(BROKER)
    return _redis[pid]


def _record(task):
    """Sleeps CELERY_PEER_SLEEP, then RPUSHes what `task` ran, and by whom."""
    if SLEEP > 0:
        time.sleep(SLEEP)
    request = task.request
    delivery_info = request.delivery_info or {}
    record = {
        "task": task.name,
        "id": request.id,
        "args": list(request.args or []),
        "kwargs": dict(request.kwargs or {}),
        "worker": "python",
        "hostname": request.hostname,
        "pid": os.getpid(),
        "retries": request.retries,
        "redelivered": bool(delivery_info.get("redelivered")),
    }
    _client().rpush(RECORD, json.dumps(record))
    return {"ok": True, "task": task.name}


@app.task(bind=True, name="send_short_message")
def send_short_message(self, message_id):
    return _record(self)


@app.task(bind=True, name="send_email_task")
def send_email_task(self, message_id):
    return _record(self)


@app.task(bind=True, name="send_notification")
def send_notification(self, message_id):
    return _record(self)


@app.task(bind=True, name="notify_from_rust")
def notify_from_rust(self, *args, **kwargs):
    return _record(self)


@app.task(name="noop")
def noop(*args, **kwargs):
    """The throughput benchmark's task: counts itself, records nothing."""
    _client().incr(NOOP_DONE)
    return {"ok": True, "task": "noop"}


# The client: send, get, fill.


def _json(kind):
    def parse(text):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"not JSON: {e}")
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"not a JSON {kind.__name__}: {text}")
        return value

    return parse


def _send(opts):
    for _ in range(opts.count):
        result = app.send_task(
            opts.task,
            args=opts.args,
            kwargs=opts.kwargs,
            serializer="json",
            queue=opts.queue,
            countdown=opts.countdown,
            expires=opts.expires,
        )
        print(result.id, flush=True)


def _get(opts):
    if BACKEND is None:
        raise SystemExit("celery_peer get: set CELERY_PEER_BACKEND to the result backend's URL")
    print(json.dumps(AsyncResult(opts.id, app=app).get(timeout=opts.timeout)))


def _fill(opts):
    # One producer (one connection) for all of them: as fast as kombu sends.
    with app.producer_or_acquire() as producer:
        for _ in range(opts.count):
            app.send_task(
                opts.task,
                args=opts.args,
                serializer="json",
                queue=opts.queue,
                producer=producer,
            )
    print(opts.count)


def main(argv):
    parser = argparse.ArgumentParser(prog="celery_peer.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    send = commands.add_parser("send", help="send a task N times, printing each id on its own line")
    send.add_argument("task")
    send.add_argument("args", type=_json(list), help="the positional arguments, a JSON array")
    send.add_argument("--kwargs", type=_json(dict), default=None, help="a JSON object")
    send.add_argument("--queue", default=None)
    send.add_argument("--countdown", type=float, default=None)
    send.add_argument("--expires", type=float, default=None)
    send.add_argument("--count", type=int, default=1)
    send.set_defaults(run=_send)

    get = commands.add_parser("get", help="wait for a task's result (needs CELERY_PEER_BACKEND)")
    get.add_argument("id")
    get.add_argument("--timeout", type=float, default=30)
    get.set_defaults(run=_get)

    fill = commands.add_parser("fill", help="send COUNT tasks over one producer, fast")
    fill.add_argument("task")
    fill.add_argument("count", type=int)
    fill.add_argument("--queue", required=True)
    fill.add_argument("--args", type=_json(list), default=[], help="a JSON array (default [])")
    fill.set_defaults(run=_fill)

    opts = parser.parse_args(argv)
    opts.run(opts)


if __name__ == "__main__":
    main(sys.argv[1:])
