"""The local stack's side of "every accepted job ends": one thread of ``comfyserve serve`` that does what two
cloud Lambdas do, with the same use cases.

- the reconciler (:class:`~comfyserve.service.reconcile.Reconciler`; Lambda ``reconciler`` on a schedule):
  sends the message and the ``Job Queued`` event a submit left undone;
- the dead-letter consumer (:class:`~comfyserve.service.dead_letter.DeadLetters`; Lambda ``dead_letter`` on the
  dead-letter queue): a job whose message was received ``max_receives`` times without finishing is failed, once,
  through the completion path. A dead letter whose handling raised comes back after its visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from comfyserve.ports import BlobStore, EventBus, JobQueue, JobStore
from comfyserve.service.completion import Completion
from comfyserve.service.dead_letter import DeadLetterOutcome, DeadLetters
from comfyserve.service.reconcile import Reconciler, ReconcileReport

log = logging.getLogger(__name__)

TICK_S = 1.0
DEAD_LETTER_VISIBILITY_S = 30


@dataclass
class LifecycleReport:
    reconciled: ReconcileReport = field(default_factory=ReconcileReport)
    dead_letters: list[DeadLetterOutcome] = field(default_factory=list)


class Lifecycle:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        bus: EventBus,
        blobs: BlobStore,
        *,
        grace_s: float,
        tick_s: float = TICK_S,
    ) -> None:
        self._reconciler = Reconciler(jobs, queue, bus, grace_s=grace_s)
        self._dead_letters = DeadLetters(jobs, blobs, Completion(jobs, bus, blobs))
        self._dlq = queue.dead_letters
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> LifecycleReport:
        report = LifecycleReport(self._reconciler.run())
        while self._dlq is not None:
            received = self._dlq.receive(10, DEAD_LETTER_VISIBILITY_S)
            if not received:
                break
            for message in received:
                try:
                    # The dead-letter queue's own receive counts one more than the jobs queue's receives.
                    outcome = self._dead_letters.on_dead_letter(message.body, message.receive_count - 1)
                except Exception:
                    log.exception("dead letter %s not handled; it comes back", message.message_id)
                    continue
                self._dlq.delete(message.receipt)
                report.dead_letters.append(outcome)
        return report

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="comfyserve-lifecycle", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.run_once()
            except Exception:  # a store or queue error: the next tick tries again
                log.exception("the lifecycle pass failed")
