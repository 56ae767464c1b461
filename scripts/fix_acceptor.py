"""The QuickFIX/J acceptor the gateway's FIX session is tested against (docs/fix.md).

    python3 scripts/fix_acceptor.py prepare                       # jars + javac, cached
    python3 scripts/fix_acceptor.py run PORT SENDER TARGET STORE  # run it (stdin commands)

The jars come from Maven Central once (like Kafka's in scripts/stack.py) into
`.state/fix-acceptor/jars-<version>`; tests/integration/fix/BallastFixAcceptor.java is
compiled with javac into a folder named after its content, so an edit recompiles it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

QUICKFIXJ_VERSION = "2.3.2"
REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "tests" / "integration" / "fix"
POM = SOURCES / "pom.xml"
MAIN_SOURCE = SOURCES / "BallastFixAcceptor.java"
MAIN_CLASS = "BallastFixAcceptor"


class AcceptorSetupError(RuntimeError):
    """Maven or javac could not prepare the acceptor (the message says which and why)."""


def state_dir() -> Path:
    raw = os.environ.get("BALLAST_STATE_DIR", "").strip()
    base = Path(raw).expanduser().resolve() if raw else REPO / ".state"
    return base / "fix-acceptor"


def _jars(state: Path) -> Path:
    """The acceptor's runtime classpath, fetched with Maven on first use."""
    jars = state / f"jars-{QUICKFIXJ_VERSION}"
    if (jars / ".complete").is_file():
        return jars
    mvn = shutil.which("mvn")
    if not mvn:
        raise AcceptorSetupError("Maven (`mvn`) is needed once to fetch the QuickFIX/J jars")
    partial = state / f"jars-{QUICKFIXJ_VERSION}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        mvn, "-B", "-q", "-f", str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
        f"-Dquickfixj.version={QUICKFIXJ_VERSION}",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise AcceptorSetupError(
            "Maven did not fetch the QuickFIX/J jars within 10 minutes"
        ) from None
    found = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
    if out.returncode != 0 or f"quickfixj-core-{QUICKFIXJ_VERSION}.jar" not in found:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise AcceptorSetupError(
            f"Maven failed to fetch the QuickFIX/J {QUICKFIXJ_VERSION} jars "
            f"(exit {out.returncode}):\n{tail}"
        )
    (partial / ".complete").write_text(f"{len(found)} jars\n")
    shutil.rmtree(jars, ignore_errors=True)
    partial.replace(jars)
    return jars


def _classpath(jars: Path) -> str:
    return os.pathsep.join(str(p) for p in sorted(jars.glob("*.jar")))


def _classes(state: Path, jars: Path) -> Path:
    """The compiled acceptor, in a folder named after the source's hash."""
    digest = hashlib.sha256(MAIN_SOURCE.read_bytes()).hexdigest()[:12]
    classes = state / f"classes-{digest}"
    if (classes / f"{MAIN_CLASS}.class").is_file():
        return classes
    javac = shutil.which("javac")
    if not javac:
        raise AcceptorSetupError("javac (a JDK 17+) is needed to compile the FIX acceptor")
    partial = state / f"classes-{digest}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [javac, "-d", str(partial), "-cp", _classpath(jars), str(MAIN_SOURCE)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise AcceptorSetupError(f"javac failed on {MAIN_SOURCE}:\n{out.stderr[-3000:]}")
    shutil.rmtree(classes, ignore_errors=True)
    partial.replace(classes)
    return classes


def prepare() -> list[str]:
    """Fetch and compile what is missing; the command that runs the acceptor (append PORT
    SENDER_COMP_ID TARGET_COMP_ID STORE_DIR)."""
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    jars = _jars(state)
    classes = _classes(state, jars)
    java = shutil.which("java")
    if not java:
        raise AcceptorSetupError("java (a JRE 17+) is needed to run the FIX acceptor")
    classpath = os.pathsep.join([str(classes), _classpath(jars)])
    return [java, "-Xmx256m", "-XX:+UseSerialGC", "-cp", classpath, MAIN_CLASS]


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"] and len(argv) == 1:
        print(" ".join(prepare()))
        return 0
    if argv[:1] == ["run"] and len(argv) == 5:
        command = [*prepare(), *argv[1:]]
        os.execv(command[0], command)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except AcceptorSetupError as exc:
        print(f"fix-acceptor: {exc}", file=sys.stderr)
        sys.exit(1)
