"""Every command in the README's ``bash`` blocks runs as written, in README order.

The commands run with bash in a working copy of the repository (the repository's files linked in,
an empty ``runs/``), so they write nothing into the checkout and later commands find what earlier
ones made. A command is left out, with the reason shown as the skip message, when it:

- is a ``make`` target (setup-level: ``make demo`` has its own test, ``make test`` is this suite,
  the cluster targets need a cluster);
- downloads data (no network here): when ``../shared/data`` holds the same file, it is copied to
  where the download would put it instead, so the commands that read it still run;
- reads ``../shared`` or a downloaded file that is not there.

Runs that take many minutes as written (the GPT baby run, the CNN's 30 epochs, the comparison
over 3 seeds) run with a shortening option appended (``LONG_RUNS``): every other part of the
command is checked as written. A command whose README comment says ``exit N`` must exit with N.
It launches torch ranks and takes minutes, so ``make test-fast`` leaves it out (``distributed``).

The first ``spark-collab`` command, and every command that needs the shell (pipes, variables,
loops, globs, other programs), runs in a fresh bash. The other ``spark-collab`` commands go to one
long-lived process started in the same working directory with the same environment
(``tests/job_driver.py``), which runs each through the command's own entry point
(``spark_jobs.__main__.main``) in one Spark session: a fresh Python with torch and a fresh JVM per
command cost about as much as the commands themselves.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from job_driver import JobDriver

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED_DATA = ROOT.parent / "shared" / "data"
# Where each download line of the README puts its file, and the same file in ../shared/data.
DOWNLOADS = {
    "data/tinyshakespeare.txt": SHARED_DATA / "tinyshakespeare" / "input.txt",
    "data/mnist/t10k-images-idx3-ubyte.gz": SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz",
    "data/mnist/t10k-labels-idx1-ubyte.gz": SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz",
    "data/hongloumeng.txt": SHARED_DATA / "chinese-classics" / "hongloumeng.txt",
    "data/books/2701-0.txt": SHARED_DATA / "gutenberg-moby-dick" / "2701-0.txt",
    "data/books/1342-0.txt": SHARED_DATA / "gutenberg-pride-and-prejudice" / "1342-0.txt",
}
COMMAND_TIMEOUT_S = 840  # under pytest's own 900 s, so a slow command fails with its output
# Substring of a long command -> what is appended so that it finishes in seconds.
LONG_RUNS = {
    "conf/train/gpt_char.toml": "--set train.max_iters=20 --set train.eval_interval=10 --set train.eval_iters=2 "
    "--set optim.warmup_iters=2 --set optim.lr_decay_iters=20",
    "conf/train/cnn.toml": "--set train.epochs=2",
    "conf/collab/gpt_diloco.toml": "--set train.max_iters=20 --set train.eval_interval=10 --set train.eval_iters=2 "
    "--set train.log_interval=10 --set optim.warmup_iters=2 --set optim.lr_decay_iters=20 --set collab.inner_steps=10",
    "conf/collab/gpt_fedavg.toml": "--set train.max_iters=20 --set train.eval_interval=10 --set train.eval_iters=2 "
    "--set train.log_interval=10 --set optim.warmup_iters=2 --set optim.lr_decay_iters=20 --set collab.inner_steps=10",
    "conf/collab/gpt_codistill.toml": "--set train.max_iters=20 --set train.eval_interval=10 --set train.eval_iters=2 "
    "--set train.log_interval=10 --set optim.warmup_iters=2 --set optim.lr_decay_iters=20 --set collab.exchange_every=5",
    "collab --compare": "--seeds 1",
}
DOWNLOAD = re.compile(r"\b(curl|wget|git clone)\b")
# A path under data/ (where the README's downloads go); not ../shared/data.
DATA_PATH = re.compile(r"(?<![\w./])data/[\w./-]*")
# A Python snippet (``python -c``) in the docs makes example data under data/ from what came before.
PREPARES_DATA = re.compile(r"\.venv/bin/python -c ")
REDIRECT_TARGET = re.compile(r">\s*\S+")
EXPECTED_EXIT = re.compile(r"#.*\bexit (\d+)\b")
SPARK_COLLAB = ".venv/bin/spark-collab"
# Anything bash would do more with than split words: such a command runs in bash.
NEEDS_SHELL = re.compile(r"[|&;<>()$`*?\[\]{}~]|^\s*\w+=")


@dataclass(frozen=True)
class Command:
    line: int
    text: str

    @property
    def expected_exit(self) -> int:
        found = EXPECTED_EXIT.search(self.text)
        return int(found.group(1)) if found else 0

    def as_run(self) -> str:
        """The command as run here: as written, plus the shortening option of a long run."""
        code = self.text.partition("  #")[0]
        extra = next((more for key, more in LONG_RUNS.items() if key in code), "")
        return f"{code.rstrip()} {extra}".rstrip()

    @property
    def name(self) -> str:
        words = [w for w in shlex.split(self.text, comments=True) if not w.startswith(("-", "PYSPARK"))]
        return f"L{self.line}-" + "-".join(Path(w).name for w in words[:3])


def readme_commands(text: str) -> list[Command]:
    """The commands of every ```bash block: backslash continuations joined, trailing comments kept;
    a comment line is kept with the command below it (it may say ``exit N``)."""
    commands: list[Command] = []
    in_block, pending, start, note = False, "", 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = stripped == "```bash" and not in_block
            note = ""
            continue
        if not in_block or not stripped:
            continue
        if not pending and stripped.startswith("#"):
            note = stripped
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        command = pending + stripped
        if note and EXPECTED_EXIT.search(note) and "#" not in command:
            command += f"  {note}"
        commands.append(Command(start, command))
        pending, note = "", ""
    return commands


# What the skipped commands would have written (--output DIR, run.dir=DIR): a later command that
# reads one of them is skipped too, instead of failing for a file that was never made.
OUTPUT_OF = re.compile(r"(?:--output\s+|run\.dir=)(\S+)")
_not_made: set[str] = set()


def skip_reason(command: Command, workdir: Path) -> str:
    """Why ``command`` is not run here, or empty when it runs."""
    reason = _skip_reason(command, workdir)
    if reason:
        _not_made.update(OUTPUT_OF.findall(command.text))
        _not_made.add(_config_value(command.text, "run", "dir"))
        _not_made.discard("")
    return reason


def _config_value(text: str, section: str, key: str) -> str:
    """``section.key`` of the ``--config FILE`` a command names, unless ``--set`` replaces it: a
    path the command reads or writes that its line does not show."""
    import tomllib

    found = re.search(r"--config\s+(\S+\.toml)", text)
    if not found or f"{section}.{key}=" in text or not (ROOT / found.group(1)).is_file():
        return ""
    doc = tomllib.loads((ROOT / found.group(1)).read_text(encoding="utf-8"))
    return str(doc.get(section, {}).get(key, ""))


def _skip_reason(command: Command, workdir: Path) -> str:
    words = shlex.split(command.text, comments=True)
    if words and words[0] == "make":
        return "a make target (setup-level; make demo and make test have their own runs)"
    if DOWNLOAD.search(command.text):
        return "a download (no network here); the file is copied from ../shared/data when present"
    if "../shared" in command.text and not SHARED_DATA.is_dir():
        return "reads ../shared/data, which is absent"
    reads = REDIRECT_TARGET.sub("", command.text)  # a file the command writes is not one it needs
    if PREPARES_DATA.match(command.text):
        reads = re.sub(r"(?<![\w./])data/", "", reads)  # a snippet that writes a file under data/
    for path in DATA_PATH.findall(reads):
        made_earlier = (
            any(p.exists() for p in workdir.glob(path)) if "*" in path else (workdir / path).exists()
        )
        if not made_earlier and not any(
            rel.startswith(path) and (workdir / rel).exists() for rel in DOWNLOADS
        ):
            return f"reads {path}, downloaded by an earlier line and absent here"
    reads += " " + _config_value(command.text, "data", "shards")
    for path in sorted(_not_made):
        if path in reads and path not in OUTPUT_OF.findall(command.text):
            return f"reads {path}, which a skipped command would have made"
    return ""


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))
FIRST_SPARK_COLLAB = next(c for c in COMMANDS if c.text.split()[0] == SPARK_COLLAB)


def test_the_readme_has_commands() -> None:
    names = [c.text.split()[0] for c in COMMANDS]
    assert len(COMMANDS) >= 10 and ".venv/bin/spark-collab" in names


def test_extraction_joins_continuations_and_keeps_exit_notes() -> None:
    text = (
        "x\n```bash\n# note\necho a \\\n    b   # tail\n\n# fails, exit 3\nfalse\n```\n```\nnot bash\n```\n"
    )
    commands = readme_commands(text)
    assert commands == [Command(4, "echo a b   # tail"), Command(8, "false  # fails, exit 3")]
    assert [c.expected_exit for c in commands] == [0, 3]
    assert commands[1].as_run() == "false"
    long = Command(1, "spark-collab collab --compare --seeds 3    # arms")
    assert long.as_run() == "spark-collab collab --compare --seeds 3 --seeds 1"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return working_copy(tmp_path_factory.mktemp("readme"))


@pytest.fixture(scope="module")
def job_driver(workdir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One process running the plain commands, in the working copy, started as a user's shell would."""
    mailbox = tmp_path_factory.mktemp("readme-driver")
    driver = JobDriver(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "job_driver.py")],
        mailbox / "requests.jsonl",
        mailbox / "results.jsonl",
        cwd=workdir,
        env=shell_env(),
    )
    try:
        yield driver
    finally:
        driver.stop()
        assert not driver.leftovers(), f"driver processes left: {driver.leftovers()}"


def shell_env() -> dict[str, str]:
    """The environment of a user's shell: no gateway of this test run's JVM, so a fresh one starts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def run_command(command: Command, workdir: Path) -> tuple[int, str, str]:
    """Run ``command`` (shortened when long) with bash in ``workdir``: exit code, stderr, output's tail."""
    proc = subprocess.run(
        ["bash", "-c", command.as_run()],
        cwd=workdir,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    return proc.returncode, proc.stderr, "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])


def run_in_driver(command: Command, driver: JobDriver) -> tuple[int, str, str]:
    """Run a plain ``spark-collab`` command through the long-lived driver: exit code, what the
    driver process printed while it ran (the job's stderr, its torch ranks' output), its tail."""
    job = driver.start(*shlex.split(command.as_run())[1:])
    result = driver.wait(job, timeout=COMMAND_TIMEOUT_S)
    # The driver prints the job's stderr as it goes, so its output has all of it, in order.
    stderr = driver.printed_by(job) or result["stderr"]
    return result["rc"], stderr, "\n".join(stderr.splitlines()[-25:])


def plain_spark_collab(command: Command) -> bool:
    """A ``spark-collab`` command that needs no shell to run as written."""
    return command.as_run().split()[0] == SPARK_COLLAB and not NEEDS_SHELL.search(command.as_run())


def run_as_written(
    command: Command, workdir: Path, request: pytest.FixtureRequest, in_driver: bool
) -> tuple[int, str, str]:
    """Run ``command`` in bash, or through the module's ``job_driver`` when ``in_driver``."""
    if in_driver:
        return run_in_driver(command, request.getfixturevalue("job_driver"))
    return run_command(command, workdir)


def working_copy(work: Path) -> Path:
    """The repository's top-level entries linked into ``work``, with an empty runs/ and the
    downloads of data/ copied from ../shared/data."""
    for entry in ROOT.iterdir():
        if entry.name not in {"runs", "data", "mlruns", ".git"}:
            (work / entry.name).symlink_to(entry)
    (work / "runs").mkdir()
    for rel, source in DOWNLOADS.items():
        if source.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, work / rel)
    # ../shared/data, as the README's own relative paths see it from the working copy.
    if SHARED_DATA.is_dir() and not (work.parent / "shared").exists():
        (work.parent / "shared").symlink_to(SHARED_DATA.parent)
    return work


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_readme_command_runs(command: Command, workdir: Path, request: pytest.FixtureRequest) -> None:
    reason = skip_reason(command, workdir)
    if reason:
        pytest.skip(reason)
    # The first spark-collab command runs in a fresh process, as a newcomer's first one does.
    in_driver = plain_spark_collab(command) and command != FIRST_SPARK_COLLAB
    returncode, stderr, tail = run_as_written(command, workdir, request, in_driver)
    expected = command.expected_exit
    assert returncode == expected, (
        f"README line {command.line}: {command.as_run()}\nexit {returncode}\n{tail}"
    )
    if expected == 0:
        assert not re.search(r"^Traceback", stderr, re.MULTILINE), tail
