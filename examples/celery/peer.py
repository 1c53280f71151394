"""The Django side of `cargo run --example celery`: sends the catalogue's
three Celery tasks as the Django code does, and runs a Celery worker for the
task the Rust worker sends back (`mark_message_sent`).

    PYTHONPATH=target/python-peers python3 examples/celery/peer.py send 42
    PYTHONPATH=target/python-peers python3 examples/celery/peer.py worker

`scripts/test.sh` installs the pinned Celery into target/python-peers (or:
pip install "celery[redis]==5.7.0"). The broker is EVENTBUS_URL (default
redis://127.0.0.1:6379/0), the result backend the same server.
"""

import os
import sys

from celery import Celery

BROKER = os.environ.get("EVENTBUS_URL", "redis://127.0.0.1:6379/0")

app = Celery("reviews", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("EVENTBUS_CELERY_VISIBILITY_TIMEOUT", "3600"))
    },
)


@app.task(name="mark_message_sent")
def mark_message_sent(message_id):
    """The Django side's bookkeeping: the Rust worker sent message `message_id`."""
    print(f"python ran mark_message_sent({message_id})", flush=True)
    return {"message_id": message_id, "status": "sent"}


def send(row_id):
    """What the Django code does in `transaction.on_commit(...)`."""
    sms = app.send_task("send_short_message", args=(row_id,), serializer="json",
                        queue="sms_send_queue")
    email = app.send_task("send_email_task", args=(row_id,), serializer="json")
    note = app.send_task("send_notification", args=(row_id,), serializer="json")
    for name, result in [("send_short_message", sms), ("send_email_task", email),
                         ("send_notification", note)]:
        print(f"sent {name}({row_id}) task {result.id}")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "send"
    if command == "send":
        send(int(sys.argv[2]) if len(sys.argv) > 2 else 42)
    elif command == "worker":
        app.worker_main(["worker", "-Q", "django_tasks", "-c", "1", "-P", "solo",
                         "--without-gossip", "--without-mingle", "-l", "info"])
    else:
        sys.exit(f"usage: {sys.argv[0]} send [row id] | worker")
