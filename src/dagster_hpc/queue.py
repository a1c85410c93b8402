"""QueueConfig: a Slurm resource request, validated before anything is submitted.

Every field is optional: ``None`` means "let the site's default apply". A resource holds a
default request and each asset may override parts of it (``run(..., queue=...)`` or asset
metadata under ``QUEUE_METADATA_KEY``); ``merged`` combines the two. ``to_sbatch_lines`` is a
pure function: the ``#SBATCH`` header that users can print with a dry run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from dagster_hpc._strict import StrictConfig, refuse_unknown_keywords
from dagster_hpc.errors import ConfigError
from dagster_hpc.slurm_options import reserved_spelled

# Asset metadata key whose value (a mapping of QueueConfig fields) overrides the resource's queue.
QUEUE_METADATA_KEY = "dagster-hpc/queue"

UNLIMITED_TIME = ("UNLIMITED", "INFINITE")

# Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME_RE = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)
_MEM_RE = re.compile(r"^(?P<n>\d+)(?P<unit>[KMGT]?)B?$", re.IGNORECASE)
_MEM_UNIT_MB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# Names Slurm accepts for partitions, accounts, QOS, reservations, GRES types.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+@%:-]*$")
# Constraint expressions may use & | [ ] * ( ) , ! but never whitespace, quotes or $ ` ; < >.
_CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.:+&|*\[\](),!-]+$")
_SIGNAL_RE = re.compile(r"^(?:(?P<scope>[RB]):)?(?:SIG)?(?P<sig>[A-Z0-9]+)(?:@(?P<secs>\d+))?$")
_KNOWN_SIGNALS = frozenset(
    "HUP INT QUIT ABRT KILL ALRM TERM USR1 USR2 CONT STOP TSTP TTIN TTOU URG XCPU XFSZ".split()
)
# Default lead time (s) when the signal is given without "@secs": Slurm's own default is 60.
DEFAULT_SIGNAL_LEAD_S = 60
# requeue=True without signal_before_timeout: the payload is told to checkpoint with USR2 (USR1 is
# NCCL's) this long before the time limit (docs/checkpoint-requeue.md).
DEFAULT_REQUEUE_SIGNAL = f"USR2@{DEFAULT_SIGNAL_LEAD_S}"
# requeue=True without max_requeues: at most this many requeues (so DEFAULT_MAX_REQUEUES + 1 attempts).
DEFAULT_MAX_REQUEUES = 3
# A free-form directive: --option or --option=value, value restricted to characters that need
# no quoting (sbatch parses #SBATCH lines itself; a newline would start a new script line).
_DIRECTIVE_RE = re.compile(
    r"^(?P<opt>--?[A-Za-z][A-Za-z0-9-]*)(?:=(?P<val>[A-Za-z0-9_.,:+@%/=&|*\[\]()!-]*))?$"
)
# Options the backend sets itself (run dir, logs, name): overriding them breaks log streaming.
RESERVED_DIRECTIVES = frozenset(
    [
        "--output",
        "-o",
        "--error",
        "-e",
        "--chdir",
        "-D",
        "--job-name",
        "-J",
        "--parsable",
        "--wrap",
        "--input",
        "-i",
    ]
)


def parse_time_limit(value: str) -> int | None:
    """Seconds for a Slurm time string; ``None`` for UNLIMITED. Raises ConfigError if invalid."""
    text = value.strip()
    if text.upper() in UNLIMITED_TIME:
        return None
    m = _TIME_RE.match(text)
    if not m:
        raise ConfigError(
            f'time_limit={value!r} is not a Slurm time: use minutes ("30"), MM:SS, HH:MM:SS, '
            'D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED, e.g. time_limit="01:30:00" or "2-00:00:00"'
        )
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "d" in g:
        total = ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    elif "c" in g:  # H:M:S
        total = (g["a"] * 60 + g["b"]) * 60 + g["c"]
    elif "b" in g:  # M:S
        total = g["a"] * 60 + g["b"]
    else:
        total = g["a"] * 60  # minutes
    _check_time_fields(value, g, total)
    return total


def _check_time_fields(value: str, g: dict[str, int], total: int) -> None:
    """Slurm silently carries an out-of-range field over (25:61:00 is stored as 26:01:00):
    a typo would then change the limit without a word, so such a field is refused."""
    hours = g.get("dh") if "d" in g else (g.get("a") if "c" in g else None)
    minutes = g.get("dm") if "d" in g else (g.get("b") if "c" in g else g.get("a"))
    seconds = g.get("ds") if "d" in g else (g.get("c") if "c" in g else g.get("b"))
    for name, v, top, ceiling in (
        ("hours", hours, "d" in g, 24),
        ("minutes", minutes, "d" in g or "c" in g, 60),
        ("seconds", seconds, True, 60),
    ):
        if v is not None and top and v >= ceiling:
            raise ConfigError(
                f"time_limit={value!r}: {name}={v} is out of range (0-{ceiling - 1}); Slurm would "
                f"silently carry it over into a different limit. Write {_normalised(total)!r} if "
                "that is what you mean"
            )


def _normalised(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hms = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{hms}" if days else hms


def parse_mem_mb(value: str, field: str = "mem") -> float:
    """Megabytes for a Slurm memory size ("512M", "4G", "1024" = MB). Raises ConfigError."""
    m = _MEM_RE.match(value.strip())
    if not m:
        raise ConfigError(
            f"{field}={value!r} is not a Slurm memory size: use a whole number with an optional "
            f'unit K, M, G or T (plain numbers are megabytes), e.g. {field}="4G" or {field}="512M"'
        )
    return int(m["n"]) * _MEM_UNIT_MB[m["unit"].upper()]


def _check_name(field: str, value: str) -> None:
    if not _NAME_RE.match(value):
        raise ConfigError(
            f"{field}={value!r} is not a valid Slurm name: use letters, digits and _ . - + @ % : "
            "only (no spaces, quotes or shell characters)"
        )


def _check_positive(field: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{field}={value} must be >= {minimum}")


def parse_signal(value: str) -> tuple[str, int]:
    """("USR2", 120) for "USR2@120", "SIGUSR2@120", "B:USR2@120" or "12@120"."""
    m = _SIGNAL_RE.match(value.strip().upper())
    sig = m["sig"] if m else ""
    if not m or not (sig in _KNOWN_SIGNALS or sig.isdigit()):
        raise ConfigError(
            f"signal_before_timeout={value!r} is not a signal spec: use NAME@SECONDS, e.g. "
            '"USR2@120" (USR2 120 s before the time limit; USR1 is taken by NCCL)'
        )
    if m["scope"] == "R":
        raise ConfigError(
            f"signal_before_timeout={value!r}: the R: scope would bypass the job wrapper, which "
            'forwards the signal to the payload; write it without a scope, e.g. "USR2@120"'
        )
    secs = int(m["secs"]) if m["secs"] else DEFAULT_SIGNAL_LEAD_S
    if secs > 65535:
        raise ConfigError(
            f"signal_before_timeout={value!r}: Slurm allows at most 65535 s lead time"
        )
    return sig, secs


def parse_directive(value: str) -> tuple[str, str | None]:
    m = _DIRECTIVE_RE.match(value.strip())
    if not m:
        raise ConfigError(
            f"extra directive {value!r} cannot be passed safely: write it as --option or "
            "--option=value without spaces, quotes, newlines or shell characters ($ ` ; < > \\), "
            'e.g. "--mail-type=END"'
        )
    opt = m["opt"]
    reserved = reserved_spelled(opt, RESERVED_DIRECTIVES)
    if reserved is not None:
        raise ConfigError(
            f"extra directive {value!r} sets {reserved}, which is set by dagster-hpc (run "
            "directory, logs, job name) and must not be overridden"
        )
    return opt, m["val"]


class QueueConfig(StrictConfig):
    """A Slurm resource request. Immutable; bad values raise ConfigError at construction."""

    partition: str | None = Field(default=None, description="Slurm partition (--partition).")
    nodes: int | None = Field(default=None, description="Number of nodes (--nodes).")
    ntasks: int | None = Field(default=None, description="Number of tasks (--ntasks).")
    cpus_per_task: int | None = Field(default=None, description="CPUs per task (--cpus-per-task).")
    mem: str | None = Field(
        default=None,
        description='Memory per node, e.g. "4G", "512M" (plain numbers are MB); exclusive with mem_per_cpu.',
    )
    mem_per_cpu: str | None = Field(default=None, description="Memory per allocated CPU.")
    gpus_per_node: int | None = Field(default=None, description="GPUs per node (--gres=gpu:N).")
    gres_type: str | None = Field(
        default=None,
        description='GPU type, e.g. "a100" -> --gres=gpu:a100:N (needs gpus_per_node).',
    )
    time_limit: str | None = Field(
        default=None,
        description="Wall-time limit in any Slurm format (30, 30:00, 01:30:00, 2-12, 2-12:30:00) or UNLIMITED.",
    )
    qos: str | None = Field(default=None, description="Quality of service (--qos).")
    account: str | None = Field(default=None, description="Account charged (--account).")
    reservation: str | None = Field(default=None, description="Reservation (--reservation).")
    constraint: str | None = Field(
        default=None, description='Node features, e.g. "intel&ib" (--constraint).'
    )
    exclusive: bool | None = Field(default=None, description="Whole nodes (--exclusive).")
    signal_before_timeout: str | None = Field(
        default=None,
        description='"USR2@120" -> --signal=B:USR2@120: the wrapper forwards it to the payload so it can '
        "checkpoint (USR1 is taken by NCCL).",
    )
    requeue: bool | None = Field(
        default=None,
        description="True: the job may be requeued (--requeue): a payload that checkpoints on the "
        "pre-timeout signal and asks to be requeued continues in a new attempt, and so does a "
        "preempted job; False or None (default): never requeued (--no-requeue): a job whose node "
        "fails ends NODE_FAIL instead of running the payload again behind the step.",
    )
    max_requeues: int | None = Field(
        default=None,
        description=f"With requeue=True: at most this many requeues (attempts = max_requeues + 1; "
        f"default {DEFAULT_MAX_REQUEUES}); one more ends the step with an error naming the attempts.",
    )
    extra_directives: list[str] = Field(
        default=[],
        description='Further sbatch options, e.g. ["--mail-type=END"] (validated, quoted).',
    )

    def __init__(self, **data: Any):
        super().__init__(**data)
        self.validate_request()

    def validate_request(self) -> None:
        """Raise ConfigError naming the first bad field and a valid example."""
        for f in ("partition", "qos", "account", "reservation", "gres_type"):
            v = getattr(self, f)
            if v is not None:
                _check_name(f, v)
        for f in ("nodes", "ntasks", "cpus_per_task"):
            _check_positive(f, getattr(self, f))
        _check_positive("gpus_per_node", self.gpus_per_node, minimum=0)
        if self.mem is not None and self.mem_per_cpu is not None:
            raise ConfigError(
                f"mem={self.mem!r} and mem_per_cpu={self.mem_per_cpu!r} are mutually exclusive in "
                "Slurm: set only one (mem is per node, mem_per_cpu per allocated CPU)"
            )
        if self.mem is not None:
            parse_mem_mb(self.mem, "mem")
        if self.mem_per_cpu is not None:
            parse_mem_mb(self.mem_per_cpu, "mem_per_cpu")
        if self.gres_type is not None and not self.gpus_per_node:
            raise ConfigError(f"gres_type={self.gres_type!r} needs gpus_per_node >= 1")
        limit = parse_time_limit(self.time_limit) if self.time_limit is not None else None
        if self.constraint is not None and not _CONSTRAINT_RE.match(self.constraint):
            raise ConfigError(
                f"constraint={self.constraint!r} is not a Slurm feature expression: use feature "
                'names with & | [ ] * ( ) , ! and no spaces or quotes, e.g. "intel&ib"'
            )
        if self.signal_before_timeout is not None:
            _, secs = parse_signal(self.signal_before_timeout)
            if limit is not None and secs >= limit:
                raise ConfigError(
                    f"signal_before_timeout={self.signal_before_timeout!r} asks for the signal "
                    f"{secs} s before a time limit of {limit} s: lower the lead time"
                )
        self._validate_requeue(limit)
        for d in self.extra_directives:
            parse_directive(d)

    def _validate_requeue(self, limit: int | None) -> None:
        if self.max_requeues is not None:
            if self.requeue is False:
                raise ConfigError(
                    f"max_requeues={self.max_requeues} with requeue=False: a job that is never "
                    "requeued has no requeues to count; set requeue=True or drop max_requeues"
                )
            _check_positive("max_requeues", self.max_requeues, minimum=0)
        if self.requeue and self.signal_before_timeout is None and limit is not None:
            _, secs = parse_signal(DEFAULT_REQUEUE_SIGNAL)
            if secs >= limit:
                raise ConfigError(
                    f"requeue=True sends the checkpoint signal {DEFAULT_REQUEUE_SIGNAL!r} by default, "
                    f"but time_limit={self.time_limit!r} is only {limit} s: set "
                    f'signal_before_timeout, e.g. "USR2@{max(1, limit // 4)}"'
                )

    def check_requeue_effective(self) -> None:
        """For the merged request (what is submitted): max_requeues only means something with
        requeue=True. (An override may set max_requeues alone when the resource sets requeue.)"""
        if self.max_requeues is not None and not self.requeue:
            raise ConfigError(
                f"max_requeues={self.max_requeues} but requeue is not enabled for this job: set "
                "requeue=True (on the resource's queue, the asset's queue metadata or run(queue=))"
            )

    def refuse_requeue(self, where: str) -> None:
        """ConfigError for requeue=True where the library cannot requeue (arrays, hetjobs)."""
        if self.requeue:
            raise ConfigError(
                f"requeue=True is not supported for {where}: only compute.run jobs are requeued "
                "(one wrapper, one attempt counter); drop requeue from this step's queue"
            )

    @property
    def effective_max_requeues(self) -> int | None:
        """How many requeues the job wrapper allows (None: requeue is not enabled)."""
        if not self.requeue:
            return None
        return DEFAULT_MAX_REQUEUES if self.max_requeues is None else self.max_requeues

    @property
    def checkpoint_signal(self) -> str | None:
        """The signal name the payload checkpoints on (requeue=True), e.g. "USR2"."""
        signal = self.signal
        return signal[0] if signal is not None and self.requeue else None

    @property
    def time_limit_seconds(self) -> int | None:
        return parse_time_limit(self.time_limit) if self.time_limit is not None else None

    @property
    def signal(self) -> tuple[str, int] | None:
        """(signal name, lead seconds) the job wrapper forwards to the payload, if any
        (requeue=True without a signal: ``DEFAULT_REQUEUE_SIGNAL``)."""
        if self.signal_before_timeout:
            return parse_signal(self.signal_before_timeout)
        return parse_signal(DEFAULT_REQUEUE_SIGNAL) if self.requeue else None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | QueueConfig | None) -> QueueConfig:
        """From asset metadata / a plain dict; unknown keys are an error, not silently ignored."""
        if data is None:
            return cls()
        if isinstance(data, QueueConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"queue override must be a QueueConfig or a mapping, got {type(data).__name__}"
            )
        refuse_unknown_keywords("queue override", data, cls.model_fields)
        return cls(**dict(data))

    def merged(self, override: QueueConfig | Mapping[str, Any] | None) -> QueueConfig:
        """This request with every field the override sets replaced (extra directives appended)."""
        over = QueueConfig.from_mapping(override)
        values = self.model_dump()
        for name, v in over.model_dump().items():
            if name == "extra_directives":
                values[name] = [*self.extra_directives, *v]
            elif v is not None:
                values[name] = v
                if name == "mem":
                    values["mem_per_cpu"] = None  # the override's choice of memory kind wins
                elif name == "mem_per_cpu":
                    values["mem"] = None
        return QueueConfig(**values)

    def to_sbatch_lines(self) -> list[str]:
        """The ``#SBATCH`` lines for this request, every value quoted. Pure."""
        opts: list[tuple[str, str | None]] = []
        simple = [
            ("partition", "--partition"),
            ("nodes", "--nodes"),
            ("ntasks", "--ntasks"),
            ("cpus_per_task", "--cpus-per-task"),
            ("mem", "--mem"),
            ("mem_per_cpu", "--mem-per-cpu"),
            ("time_limit", "--time"),
            ("qos", "--qos"),
            ("account", "--account"),
            ("reservation", "--reservation"),
            ("constraint", "--constraint"),
        ]
        for field, opt in simple:
            v = getattr(self, field)
            if v is not None:
                opts.append((opt, str(v)))
        if self.gpus_per_node:
            gres = (
                f"gpu:{self.gres_type}:{self.gpus_per_node}"
                if self.gres_type
                else f"gpu:{self.gpus_per_node}"
            )
            opts.append(("--gres", gres))
        if self.exclusive:
            opts.append(("--exclusive", None))
        if self.requeue is not None:
            opts.append(("--requeue" if self.requeue else "--no-requeue", None))
        if self.signal is not None:
            sig, secs = self.signal
            opts.append(("--signal", f"B:{sig}@{secs}"))
        opts.extend(parse_directive(d) for d in self.extra_directives)
        return [
            f"#SBATCH {opt}" if val is None else f"#SBATCH {opt}={shlex.quote(val)}"
            for opt, val in opts
        ]
