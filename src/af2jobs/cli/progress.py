"""Stage progress for the terminal: rich progress bars on a TTY, plain log lines otherwise."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def _expected_runs(strategy: str, n_models: int) -> int:
    return n_models + 1 if strategy == "best" and n_models > 1 else n_models


class StageReporter:
    """Callable as the pipeline's progress hook: (stage, event, details)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.bars: Progress | None = None
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "StageReporter":
        if self.live:
            self.bars = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), console=self.console, transient=False)
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.stop()

    def _task(self, key: str, description: str, total: float) -> int:
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(description, total=total, info="")
        return self.tasks[key]

    def __call__(self, stage: str, event: str, details: dict) -> None:
        if not self.live:
            self._log(stage, event, details)
            return
        if stage == "record" and event == "start":
            self.tasks.clear()
            self.console.print(f"[bold]{details['name']}[/] ({details['length']} aa, record {details['index']} "
                               f"of {details['total']})")
        elif stage == "msa" and event == "database_start":
            self._task(f"msa:{details['database']}", f"MSA {details['database']}", 1)
        elif stage == "msa" and event in ("database_done", "database_cached"):
            task = self._task(f"msa:{details['database']}", f"MSA {details['database']}", 1)
            info = f"{details.get('hits', 0)} hits" + (" (cache)" if event == "database_cached" else "")
            self.bars.update(task, completed=1, info=info)
        elif stage == "features":
            task = self._task("features", "features", 1)
            if event == "done":
                self.bars.update(task, completed=1, info=f"{details['msa_rows']} MSA rows")
        elif stage == "predict" and event == "start":
            total = _expected_runs(details["strategy"].split(":")[0], len(details["models"]))
            self._task("predict", f"predict ({details['strategy']})", total)
        elif stage == "predict" and event == "model_start":
            self.bars.update(self.tasks["predict"], info=f"{details['model']} {details['phase']}")
        elif stage == "predict" and event == "model_done":
            self.bars.update(self.tasks["predict"], advance=1,
                             info=f"{details['model']} {details['phase']} score {details['ranking_confidence']:.1f}")
        elif stage == "predict" and event == "done":
            task = self.tasks["predict"]
            self.bars.update(task, completed=self.bars.tasks[task].total)

    def _log(self, stage: str, event: str, details: dict) -> None:
        if event == "recycle":
            return
        text = " ".join(f"{k}={v}" for k, v in details.items() if k not in ("best",))
        print(f"[{stage}] {event} {text}".rstrip(), file=sys.stderr, flush=True)
