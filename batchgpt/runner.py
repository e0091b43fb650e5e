"""The run: prompts flow from the input through a worker pool into the output.

    reader ──queue──▶ N workers ──▶ ResultLog (+ progress)      committer ──▶ fsync + checkpoint

`Runner.run` opens the job (lock, checkpoint check and output recovery, checkpoint.py), then runs
one task group: the reader streams the input, skipping done lines and recording invalid ones at
once; each worker takes one prompt at a time (so `concurrency` bounds requests in flight), asks a
client from the pool under the retry policy and the circuit breaker, and appends the result line
before it takes the next (so a kill -9 loses at most the requests in flight); the committer
group-commits beside them, in a thread.

`stop()` ends dispatch: requests in flight get `drain_timeout` seconds (an `asyncio.timeout` that
the stop reschedules), then the committer commits once more. A service that refuses every prompt
(a quota, a refused key, a ban on every proxy, a broken site) stops the run the same way and ends
it with `SiteHaltedError`; any other `JobError` cuts it at once. The runner installs no signal
handlers: `run_foreground` (what the CLI calls) does, so `run()` leaves a library caller's process
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

from batchgpt.checkpoint import (
    Checkpoint,
    InputScan,
    Interrupted,
    JobLock,
    RecoveredOutput,
    ResultLog,
    recover_output,
    scan_input,
)
from batchgpt.config import RunConfig
from batchgpt.errors import (
    JobError,
    OutputWriteError,
    ProviderError,
    SiteHaltedError,
    UsageError,
    file_errors,
)
from batchgpt.formats import ErrorInfo, Result, encode
from batchgpt.inputs import read_prompts
from batchgpt.pacing import Pacer
from batchgpt.pool import ClientPool
from batchgpt.progress import Progress, RunStats
from batchgpt.providers import backend_class
from batchgpt.providers.base import Answer
from batchgpt.records import InvalidLine, PromptRecord
from batchgpt.retry import CircuitBreaker, HaltRule, RetryPolicy, send_with_retries

log = logging.getLogger("batchgpt")

_END = None


@dataclass
class RunOutcome:
    """How the run ended and what the output holds."""

    exit_code: int
    stats: RunStats
    stopped_by: str | None = None


class Runner:
    """One run of one job; `run()` returns its outcome or raises a `JobError`."""

    def __init__(self, config: RunConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.backend = backend_class(config.provider)
        self.rng = rng or random.Random()
        self.stats = RunStats()
        self.policy = RetryPolicy(retries=config.retries)
        self.breaker = CircuitBreaker(
            threshold=max(5, config.concurrency), give_up_after=config.give_up_after
        )
        self.halts = HaltRule()
        self.stopped_by: str | None = None
        self._stopping = asyncio.Event()
        self._deadline: asyncio.Timeout | None = None
        self._fatal: JobError | None = None
        self._halted: SiteHaltedError | None = None
        self._prompts: asyncio.Queue[PromptRecord | None] = asyncio.Queue(config.concurrency * 2)
        self._log: ResultLog | None = None
        self._progress: Progress | None = None
        self._pending = 0  # lines appended since the last commit began
        self._commit_due = asyncio.Event()
        self._finished = False
        self._warned_params = False
        self._input_size: int | None = None  # the bytes of input fingerprinted at start

    # stopping ---------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Stop dispatching; requests in flight get `drain_timeout` seconds (e.g. on SIGTERM)."""
        if self.stopped_by is None and self._halted is None:
            self.stopped_by = reason
            log.warning(
                "%s: stopped dispatching; waiting up to %g s for requests in flight",
                reason,
                self.config.drain_timeout,
            )
        self._drain_within(self.config.drain_timeout)

    def _halt(self, error: SiteHaltedError) -> None:
        """The service refuses every prompt: stop dispatching; `run` raises `error` at the end."""
        if self._halted is None and self.stopped_by is None:
            self._halted = error
            log.warning(
                "the service refuses every prompt: stopped dispatching; waiting up to %g s for "
                "requests in flight",
                self.config.drain_timeout,
            )
        self._drain_within(self.config.drain_timeout)

    def _fail(self, error: JobError) -> None:
        """The run cannot go on: cut it now; `run` raises `error`."""
        if self._fatal is None:
            self._fatal = error
        self._drain_within(0)

    def _drain_within(self, seconds: float) -> None:
        """End dispatch now and the pipeline within `seconds` (never later than already set)."""
        self._stopping.set()
        if self._deadline is not None:
            when = asyncio.get_running_loop().time() + seconds
            current = self._deadline.when()
            self._deadline.reschedule(when if current is None else min(current, when))

    # set-up -----------------------------------------------------------------------------------
    def _prepare(self) -> tuple[ResultLog, RecoveredOutput, InputScan]:
        """Check the checkpoint, recover the output, and read the input once: its fingerprint
        (what `_read` reads, no further) and its physical line count. A stop while either file
        is read raises `Interrupted` before anything is changed."""
        config = self.config
        stop = self._stopping.is_set
        if config.restart:
            for path in (config.output, config.checkpoint):
                with file_errors("remove", path):
                    path.unlink(missing_ok=True)
            log.warning("--restart: removed %s and its checkpoint", config.output)
        saved = Checkpoint.load(config.checkpoint)
        with file_errors("read", config.input):
            scan = scan_input(
                config.input, prefix=None if saved is None else saved.input["size"], stop=stop
            )
        options = config.result_options()
        if saved is not None and saved.check(scan, options, config.input):
            log.warning(
                "%s grew since the checkpoint (size %d → %d): its new lines are processed",
                config.input,
                saved.input["size"],
                scan.fingerprint["size"],
            )
        elif saved is None and config.output.exists() and config.output.stat().st_size:
            log.warning("no checkpoint at %s: resuming from the output alone", config.checkpoint)
        recovered = recover_output(
            config.output,
            repair=config.repair,
            drop=(lambda r: r.retryable) if config.retry_errors else None,
            stop=stop,
        )
        if recovered.cut_bytes:
            log.warning("cut a torn tail of %d bytes from %s", recovered.cut_bytes, config.output)
        if recovered.dropped_lines:
            log.warning(
                "removed %d lines from %s to redo them", recovered.dropped_lines, config.output
            )
        header = Checkpoint(str(config.input.resolve()), scan.fingerprint, options)
        result_log = ResultLog(config.output, config.checkpoint, header)
        self.stats.previous_ok = recovered.ok
        self.stats.previous_errors = recovered.errors.copy()
        self.stats.previous_known = True
        result_log.commit(self.stats.counts())
        self._input_size = scan.fingerprint["size"]
        return result_log, recovered, scan

    # pipeline ---------------------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        config = self.config
        if not config.input.is_file():
            raise UsageError(f"cannot read input {config.input}: no such file")
        for path in (config.output, config.checkpoint):
            if not path.parent.is_dir():
                raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
        backend = self.backend(config, Pacer(config.rate) if config.rate > 0 else None)
        pool = ClientPool(
            backend.client,
            sessions=config.sessions,
            proxies=config.proxies,
            max_clients=-(-config.concurrency // config.sessions) + 1,
        )
        try:
            await backend.preflight(pool.clients[0])
            with JobLock(config.lock_path):
                # In a thread, so that a stop during a long input scan or recovery is heard
                # at once.
                try:
                    result_log, recovered, scan = await asyncio.to_thread(self._prepare)
                except Interrupted:
                    return RunOutcome(self._exit_code(), self.stats, self.stopped_by)
                share = scan.lines // config.shard.count if config.shard else scan.lines
                self._progress = Progress(
                    self.stats, total=max(share - recovered.done.count, 0), bar=config.progress
                )
                self._log = result_log
                try:
                    await self._pipeline(pool, recovered, result_log)
                finally:
                    self._progress.close()
                    result_log.close()
        finally:
            await pool.close()
        if self._fatal is not None:
            raise self._fatal
        if self._halted is not None:
            raise self._halted
        return RunOutcome(self._exit_code(), self.stats, self.stopped_by)

    def _exit_code(self) -> int:
        if self.stopped_by is not None:
            return 130 if self.stopped_by == "SIGINT" else 143
        return 1 if self.stats.total_errors else 0

    async def _pipeline(
        self, pool: ClientPool, recovered: RecoveredOutput, result_log: ResultLog
    ) -> None:
        """Reader and workers under the drain deadline, the committer beside them."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._commit_loop(result_log))
            try:
                async with asyncio.timeout(None) as self._deadline:
                    if self._stopping.is_set():  # stopped while the input was scanned
                        self._drain_within(0 if self._fatal else self.config.drain_timeout)
                    async with asyncio.TaskGroup() as workers:
                        workers.create_task(self._read(recovered))
                        for _ in range(self.config.concurrency):
                            workers.create_task(self._work(pool))
            except TimeoutError:
                if self._fatal is None:
                    log.warning("the drain deadline passed: requests in flight are redone later")
            finally:
                self._finished = True
                self._commit_due.set()

    async def _read(self, recovered: RecoveredOutput) -> None:
        config = self.config
        try:
            for item in read_prompts(
                config.input,
                default_model=config.model,
                check_model=self.backend.check_model,
                seen=recovered.seen,
                done=recovered.done,
                shard=config.shard,
                max_line_bytes=config.max_line_bytes,
                size=self._input_size,
            ):
                if self._stopping.is_set():
                    break
                if isinstance(item, InvalidLine):
                    self._record(item.result())
                    continue
                if item.params and not self.backend.sends_params and not self._warned_params:
                    self._warned_params = True
                    log.warning(
                        "line %d: body fields %s are not supported by %s and are ignored "
                        "(reported once)",
                        item.line,
                        ", ".join(item.params),
                        self.backend.name,
                    )
                await self._prompts.put(item)
        except JobError as error:  # the input could not be read: named, exit 2 or 74
            self._fail(error)
        # Not in a `finally`: once cancelled, the workers are gone and a put on a full queue
        # would block forever, so the task group (and the run) would never end.
        for _ in range(config.concurrency):
            await self._prompts.put(_END)

    async def _work(self, pool: ClientPool) -> None:
        while (record := await self._prompts.get()) is not _END:
            if self._stopping.is_set():
                continue  # keep emptying the queue so the reader can finish
            try:
                result = await self._answer(pool, record)
            except SiteHaltedError as error:
                self._halt(error)  # this prompt stays unwritten, for the next run
            except JobError as error:
                self._fail(error)
            else:
                self._record(result)

    async def _answer(self, pool: ClientPool, record: PromptRecord) -> Result:
        async def attempt() -> Answer:
            client = pool.pick()
            try:
                answer = await client.ask(record.messages, record.model, record.params)
            except ProviderError as error:
                pool.report(client, error)
                raise
            pool.report(client, None)
            return answer

        started = time.monotonic()
        outcome = await send_with_retries(attempt, self.policy, self.breaker, self.halts, self.rng)
        error, answer = outcome.error, outcome.answer
        return Result(
            record.id,
            record.line,
            record.model,
            response=None if answer is None else answer.text,
            error=None
            if error is None
            else ErrorInfo(error.kind, error.message, error.http_status, error.retryable),
            attempts=outcome.attempts,
            latency_ms=int((time.monotonic() - started) * 1000),
            metadata=record.metadata,
            usage=None if answer is None else answer.usage,
            body=None if answer is None else answer.body,
        )

    def _record(self, result: Result) -> None:
        """Append one result line now: no await between a finished request and its line."""
        if self._fatal is not None or self._log is None or self._progress is None:
            return
        try:
            self._log.append(encode(result, self.config.format))
        except OutputWriteError as exc:
            self._fail(exc)
            return
        self.stats.add(result)
        self._progress.update(1)
        self._pending += 1
        if self._pending >= self.config.sync_lines:
            self._commit_due.set()

    async def _commit_loop(self, result_log: ResultLog) -> None:
        """Group commit every `sync_lines` lines or `sync_seconds`, and once more at the end."""
        while not self._finished:
            with contextlib.suppress(TimeoutError):  # not wait_for: see CircuitBreaker.admit
                async with asyncio.timeout(self.config.sync_seconds):
                    await self._commit_due.wait()
            self._commit_due.clear()
            await self._commit(result_log)
        await self._commit(result_log)

    async def _commit(self, result_log: ResultLog) -> None:
        """fsync and checkpoint in a thread; workers keep appending meanwhile."""
        if not self._pending or self._fatal is not None:
            return
        self._pending = 0
        try:
            await asyncio.to_thread(result_log.commit, self.stats.counts(), result_log.offset)
        except OutputWriteError as exc:
            self._fail(exc)


def run(config: RunConfig) -> RunOutcome:
    """Run a job to its end (or its stop) and return how it ended; raises `JobError`.

    For libraries: no signal handler is installed (see `run_foreground`)."""
    return asyncio.run(Runner(config).run())


def run_foreground(config: RunConfig) -> RunOutcome:
    """Run a job as the `batchgpt run` command does: SIGINT/SIGTERM stop it gracefully (exit 130
    /143 after the drain), a second one exits at once (the output stays consistent), and a
    file-size limit is an I/O error (EFBIG) instead of death by SIGXFSZ."""

    async def main() -> RunOutcome:
        runner = Runner(config)
        with _stop_on_signals(runner):
            return await runner.run()

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return asyncio.run(main())


@contextlib.contextmanager
def _stop_on_signals(runner: Runner) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            log.error(
                "second %s: exiting now; the output is consistent, run again to resume", sig.name
            )
            os._exit(130 if sig == signal.SIGINT else 143)
        received.append(sig)
        runner.stop(sig.name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
