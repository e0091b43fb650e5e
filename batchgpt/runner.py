"""The run: prompts flow from the input through a worker pool into the output.

    reader ──queue──▶ N workers ──▶ output (+ progress)      committer ──▶ fsync + checkpoint

The reader streams the input, skipping lines already done and recording invalid lines at once.
Each worker takes one prompt at a time (so `concurrency` bounds requests in flight), picks a
session from the pool and applies the retry policy and the circuit breaker. A result line is
appended the moment it is complete, before its worker sends anything else, so a kill -9 loses at
most the requests in flight. The committer group-commits (checkpoint.py) in a thread meanwhile.
SIGINT/SIGTERM stop the reader and workers; in-flight prompts get `drain_timeout` to finish, then
the committer commits once more.
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
    CHECKPOINT_VERSION,
    JobLock,
    RecoveredOutput,
    ResultLog,
    check_checkpoint,
    read_checkpoint,
    recover_output,
    scan_input,
)
from batchgpt.config import RunConfig
from batchgpt.errors import JobError, OutputWriteError, ProviderError, UsageError
from batchgpt.inputs import read_prompts
from batchgpt.pacing import Pacer
from batchgpt.pool import SessionPool
from batchgpt.progress import Progress, RunStats
from batchgpt.providers.chatgpt_es import ChatGptEs
from batchgpt.records import ErrorInfo, InvalidLine, PromptRecord, Result, encode_result
from batchgpt.retry import CircuitBreaker, RetryPolicy, send_with_retries

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
        self.rng = rng or random.Random()
        self.stats = RunStats()
        self.policy = RetryPolicy(retries=config.retries)
        self.breaker = CircuitBreaker(
            threshold=max(5, config.concurrency), give_up_after=config.give_up_after
        )
        self.stopped_by: str | None = None
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self._fatal: JobError | None = None
        self._prompts: asyncio.Queue[PromptRecord | None] = asyncio.Queue(config.concurrency * 2)
        self._log: ResultLog | None = None
        self._progress: Progress | None = None
        self._pending = 0  # lines appended since the last commit began
        self._commit_due = asyncio.Event()
        self._finished = False
        self._warned_params = False

    # set-up -----------------------------------------------------------------------------------
    def _prepare(self) -> tuple[ResultLog, RecoveredOutput, int]:
        """Check the checkpoint, recover the output; also the input's physical line count."""
        config = self.config
        if config.restart:
            for path in (config.output, config.checkpoint):
                path.unlink(missing_ok=True)
            log.warning("--restart: removed %s and its checkpoint", config.output)
        input_print, input_lines = scan_input(config.input)
        options = config.result_options()
        saved = read_checkpoint(config.checkpoint)
        if saved is not None:
            check_checkpoint(saved, input_print, options, config.input)
        elif config.output.exists() and config.output.stat().st_size:
            log.warning("no checkpoint at %s: resuming from the output alone", config.checkpoint)
        recovered = recover_output(
            config.output,
            repair=config.repair,
            drop=(lambda r: not r.ok and r.retryable) if config.retry_errors else None,
        )
        if recovered.cut_bytes:
            log.warning("cut a torn tail of %d bytes from %s", recovered.cut_bytes, config.output)
        if recovered.dropped_lines:
            log.warning(
                "removed %d lines from %s to redo them", recovered.dropped_lines, config.output
            )
        header = {
            "version": CHECKPOINT_VERSION,
            "input_path": str(config.input.resolve()),
            "input": input_print,
            "options": options,
        }
        result_log = ResultLog(config.output, config.checkpoint, header)
        self.stats.previous_ok = recovered.ok
        self.stats.previous_errors = recovered.errors.copy()
        result_log.commit(self.stats.counts())
        return result_log, recovered, input_lines

    # pipeline ---------------------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        config = self.config
        if not config.input.is_file():
            raise UsageError(f"cannot read input {config.input}: no such file")
        for path in (config.output, config.checkpoint):
            if not path.parent.is_dir():
                raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit must be EFBIG, not death
        with JobLock(config.lock_path):
            result_log, recovered, input_lines = self._prepare()
            share = input_lines // config.shard.count if config.shard else input_lines
            progress = Progress(
                self.stats, total=max(share - recovered.done.count, 0), bar=config.progress
            )
            pool = SessionPool(
                config.base_url,
                sessions=config.sessions,
                proxies=config.proxies,
                timeout=config.timeout,
                limiter=Pacer(config.rate) if config.rate > 0 else None,
                max_clients=-(-config.concurrency // config.sessions) + 1,
            )
            self._log, self._progress = result_log, progress
            committer = asyncio.create_task(self._commit_loop(result_log))
            try:
                with self._signals():
                    await self._dispatch(pool, recovered)
            finally:
                self._finished = True
                self._commit_due.set()
                await committer
                progress.close()
                await pool.close()
                result_log.close()
        if self._fatal is not None:
            raise self._fatal
        return RunOutcome(self._exit_code(), self.stats, self.stopped_by)

    def _exit_code(self) -> int:
        if self.stopped_by is not None:
            return 130 if self.stopped_by == "SIGINT" else 143
        return 1 if self.stats.total_errors else 0

    async def _dispatch(self, pool: SessionPool, recovered: RecoveredOutput) -> None:
        """Run the pump until it ends, or until a signal's drain deadline, or an I/O failure."""
        pump = asyncio.create_task(self._pump(pool, recovered))
        stop = asyncio.create_task(self._stop.wait())
        abort = asyncio.create_task(self._abort.wait())
        try:
            await asyncio.wait({pump, stop, abort}, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done() and not self._abort.is_set():
                log.warning(
                    "%s: stopped dispatching; waiting up to %g s for requests in flight",
                    self.stopped_by,
                    self.config.drain_timeout,
                )
                await asyncio.wait(
                    {pump, abort},
                    timeout=self.config.drain_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            for task in (pump, stop, abort):
                task.cancel()
            outcome, *_ = await asyncio.gather(pump, stop, abort, return_exceptions=True)
        if isinstance(outcome, BaseExceptionGroup):
            job_errors, _ = outcome.split(JobError)
            if job_errors is not None:
                raise _first_leaf(job_errors) from None
            raise outcome
        if isinstance(outcome, Exception):
            raise outcome

    async def _pump(self, pool: SessionPool, recovered: RecoveredOutput) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(recovered))
            for _ in range(self.config.concurrency):
                group.create_task(self._work(pool))

    async def _read(self, recovered: RecoveredOutput) -> None:
        config = self.config
        for item in read_prompts(
            config.input,
            default_model=config.model,
            seen=recovered.seen,
            done=recovered.done,
            shard=config.shard,
            max_line_bytes=config.max_line_bytes,
        ):
            if self._stop.is_set():
                break
            if isinstance(item, InvalidLine):
                self._record(Result.invalid(item))
                continue
            if item.ignored_params and not self._warned_params:
                self._warned_params = True
                log.warning(
                    "line %d: body fields %s are not supported by chatgpt.es and are "
                    "ignored (reported once)",
                    item.line,
                    ", ".join(item.ignored_params),
                )
            await self._prompts.put(item)
        # Not in a `finally`: once cancelled, the workers are gone and a put on a full queue
        # would block forever, so the task group (and the run) would never end.
        for _ in range(config.concurrency):
            await self._prompts.put(_END)

    async def _work(self, pool: SessionPool) -> None:
        while (record := await self._prompts.get()) is not _END:
            if not self._stop.is_set():
                self._record(await self._answer(pool, record))

    async def _answer(self, pool: SessionPool, record: PromptRecord) -> Result:
        message = ChatGptEs.format_message(record.messages)

        async def attempt() -> str:
            session = pool.pick()
            try:
                answer = await session.ask(message)
            except ProviderError as error:
                pool.report(session, error)
                raise
            pool.report(session, None)
            return answer

        started = time.monotonic()
        outcome = await send_with_retries(attempt, self.policy, self.breaker, self.rng)
        error = outcome.error
        return Result(
            record.id,
            record.line,
            record.model,
            response=outcome.answer,
            error=None
            if error is None
            else ErrorInfo(error.kind, error.message, error.http_status, error.retryable),
            attempts=outcome.attempts,
            latency_ms=int((time.monotonic() - started) * 1000),
            metadata=record.metadata,
        )

    def _record(self, result: Result) -> None:
        """Append one result line now: no await between a finished request and its line."""
        if self._fatal is not None or self._log is None or self._progress is None:
            return
        try:
            self._log.append(encode_result(result, self.config.output_format))
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_due.wait(), self.config.sync_seconds)
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

    def _fail(self, error: JobError) -> None:
        log.error("%s", error)
        self._fatal = error
        self._abort.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.stopped_by is not None:
            log.error("second %s: exiting now; the output is consistent, run again to resume", name)
            os._exit(130 if sig == signal.SIGINT else 143)
        self.stopped_by = name
        self._stop.set()


def _first_leaf(group: BaseExceptionGroup[JobError]) -> JobError:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, JobError)
    return error


def run(config: RunConfig) -> RunOutcome:
    """Run a job to its end (or its stop) and return how it ended; raises `JobError`."""
    return asyncio.run(Runner(config).run())
