"""The check that keeps a secret of the session out of what it commits: it reads the staged changes
(and the agent's own commits) a part at a time, so a staged file of gigabytes never takes the
session's memory, and finds what masking the whole text would find, wherever the parts are cut."""

from __future__ import annotations

import io
import random
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from aiimpl_core.session import git as G
from aiimpl_core.session.git import Git, RefusedChanges, files_adding
from aiimpl_core.session.redact import Redactor

SECRET = "sk-ant-api03-Zq9xW2vB7nM4kL1pR8tY"
# a token, a PEM-like secret of several lines, a long one (matched by substring, not pattern)
SECRETS = [SECRET, "ghs_" + "A1b2C3d4" * 4,
           "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\n-----END KEY-----",
           "L" * 300 + "ong" + "q" * 300]


def _scanned(redactor: Redactor, parts: list[str]) -> bool:
    scan = redactor.scan()
    for part in parts:
        scan.feed(part)
    return scan.end()


def _cuts(text: str, rng: random.Random) -> list[str]:
    points = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 6))))
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def test_a_scan_finds_what_masking_the_whole_text_finds_wherever_it_is_cut() -> None:
    """Thousands of texts: a secret's shapes (as is, URL-encoded, JSON-escaped, base64, broken by
    line breaks and escaped line breaks), near misses, cut anywhere (between a backslash and its
    "n" too): the scan says a secret is there exactly when :meth:`Redactor.known` masks one."""
    redactor = Redactor(SECRETS)
    rng = random.Random(7)
    filler = ["x", " ", "\n", "\\", "\\n", "n", "%2F", "==", "\r", "é", "abc "]
    found = missed = 0
    for _ in range(3000):
        secret = rng.choice(SECRETS)
        shape = rng.choice([secret, secret[:-1], secret[1:], secret.replace("-", "%2D"),
                            secret.replace("\n", "\\n"), secret[:9] + "\n" + secret[9:],
                            secret[:12] + "\\n" + secret[12:], secret[:5] + "\\" + secret[5:]])
        text = "".join(rng.choice(filler) for _ in range(rng.randint(0, 30))) + shape + \
            "".join(rng.choice(filler) for _ in range(rng.randint(0, 30)))
        expected = redactor.known(text) != text
        assert _scanned(redactor, _cuts(text, rng)) == expected, (text, expected)
        found, missed = found + expected, missed + (not expected)
    assert found > 500 and missed > 500  # (both answers were tried, many times)


def test_a_scan_of_a_redactor_without_secrets_finds_nothing() -> None:
    assert not _scanned(Redactor(), ["anything", SECRET])


def _patch(*files: tuple[str, list[bytes]]) -> bytes:
    out = b""
    for path, lines in files:
        out += f"diff --git a/{path} b/{path}\nindex 1..2 100644\n--- a/{path}\n+++ b/{path}\n".encode()
        out += b"@@ -1,0 +1,%d @@ def f():\n" % len(lines) + b"".join(b"+" + line + b"\n" for line in lines)
    return out


def test_the_files_read_are_the_ones_whose_added_lines_hold_a_secret() -> None:
    redactor = Redactor([SECRET])
    patch = _patch(("clean.txt", [b"hello"]), (".env", [b"KEY=" + SECRET.encode()]),
                   ("wrapped.txt", [SECRET[:10].encode(), SECRET[10:].encode()]),
                   # an added line that begins "++ " is shown "+++ ": still an added line, not a header
                   ("notes.md", [b"++ " + SECRET.encode()]),
                   # a carriage return inside a line does not end it
                   ("crlf.txt", [b"a\rb " + SECRET.encode() + b"\r"]),
                   # bytes that are no UTF-8 around it
                   ("blob.bin", [b"\xff\xfe" + SECRET.encode() + b"\x80"]))
    # removed lines, the headers' paths and hunk headers are not read
    patch += (f"diff --git a/{SECRET} b/{SECRET}\n--- a/{SECRET}\n+++ b/{SECRET}\n"
              f"@@ -1 +0,0 @@ {SECRET}\n-{SECRET}\n\\ No newline at end of file\n").encode()
    assert files_adding(io.BytesIO(patch), redactor.scan) == [".env", "wrapped.txt", "notes.md", "crlf.txt",
                                                              "blob.bin"]


def test_a_line_longer_than_a_read_and_a_character_across_two_reads_are_read_right(monkeypatch) -> None:
    monkeypatch.setattr(G, "READ_BYTES", 64)
    redactor = Redactor([SECRET, "pässwört-geheim"])
    long_line = b"y" * 1000 + SECRET.encode() + b"z" * 1000
    assert files_adding(io.BytesIO(_patch(("a.txt", [long_line]))), redactor.scan) == ["a.txt"]
    for pad in range(8):  # the "ä" (two bytes) falls on every side of a read's end
        line = b"w" * (61 + pad) + "pässwört-geheim".encode()
        assert files_adding(io.BytesIO(_patch(("b.txt", [b"+" * pad, line]))), redactor.scan) == ["b.txt"]
    # a line of only "+" characters longer than a read: its parts after the first are not headers
    plus = b"+" * 200 + SECRET.encode()
    assert files_adding(io.BytesIO(_patch(("c.txt", [plus]))), redactor.scan) == ["c.txt"]
    assert files_adding(io.BytesIO(_patch(("d.txt", [b"q" * 5000]))), redactor.scan) == []


@pytest.mark.parametrize("secret_at_end", [False, True])
def test_a_patch_of_many_one_line_hunks_is_read_in_linear_time(secret_at_end: bool) -> None:
    """A change to every other line of a file is a hunk a line: the bytes waiting for the scan
    were summed again at each hunk, and 1 MB of such hunks took four minutes."""
    patch = b"diff --git a/x b/x\n" + b"@@\n+a\n" * (1_000_000 // 6)
    if secret_at_end:
        patch += b"@@\n+" + SECRET.encode() + b"\n"
    started = time.process_time()
    assert files_adding(io.BytesIO(patch), Redactor([SECRET]).scan) == (["x"] if secret_at_end else [])
    assert time.process_time() - started < 3


def test_added_lines_of_many_hunks_are_scanned_as_one_text_across_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The added lines of a file's hunks go to its scan together, a read's worth at a time: a
    secret broken over two hunks, wherever the reads cut them, is found; one in another file's
    hunks is not counted for this one."""
    monkeypatch.setattr(G, "READ_BYTES", 64)
    redactor = Redactor([SECRET])
    for pad in range(0, 40, 3):
        hunks = [b"f" * (i % 7) for i in range(pad)] + [SECRET[:12].encode()]
        files = [(b"a.txt", [*hunks, SECRET[12:].encode(), b"z"] * 3), (b"b.txt", hunks), (b"c.txt", hunks)]
        patch = b"".join(
            b"diff --git a/%s b/%s\n" % (name, name) + b"".join(b"@@\n+" + line + b"\n" for line in lines)
            for name, lines in files
        )
        assert files_adding(io.BytesIO(patch), redactor.scan) == ["a.txt"], pad


def _repo(tmp_path: Path) -> Git:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("start\n")
    git = Git(str(work), env)
    git.commit_all("start")
    return git


def _refusal(files: list[str]) -> str:
    return "refused: " + ", ".join(files)


@pytest.mark.parametrize("secret_at_end", [False, True])
def test_a_staged_file_of_many_megabytes_is_checked_in_little_memory(
    tmp_path: Path, secret_at_end: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MB of staged text (a dataset the agent wrote), read 128 KB at a time: the check holds a
    few reads' worth of it at once. It read the whole diff as text, split in lines, joined again:
    several times its size (a file of gigabytes took the session's memory)."""
    monkeypatch.setattr(G, "READ_BYTES", 128 * 1024)
    git = _repo(tmp_path)
    line = b"0123456789abcdef" * 4 + b"\n"
    with open(Path(git.cwd) / "data.csv", "wb") as f:
        for _ in range(8):
            f.write(line * ((1 << 20) // len(line)))
        if secret_at_end:
            f.write(b"token," + SECRET.encode() + b"\n")
    redactor = Redactor([SECRET])
    tracemalloc.start()
    try:
        if secret_at_end:
            with pytest.raises(RefusedChanges, match="refused: data.csv"):
                git.commit_all("data", holds=redactor.scan, refuse=_refusal)
        else:
            assert git.commit_all("data", holds=redactor.scan, refuse=_refusal)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MB"
    staged = git.run("diff", "--cached", "--name-only").stdout.split()
    assert staged == []  # committed, or unstaged when refused


def test_the_agents_own_commits_are_checked_and_a_file_named_twice_is_said_once(tmp_path: Path) -> None:
    git = _repo(tmp_path)
    start = git.head()
    work = Path(git.cwd)
    (work / ".env").write_text(f"KEY={SECRET}\n")
    git.run("add", ".env")
    git.run("commit", "-q", "-m", "the agent's own")
    (work / ".env").write_text(f"KEY={SECRET}\nOTHER={SECRET}\n")
    (work / "clean.txt").write_text("hello\n")
    with pytest.raises(RefusedChanges) as refused:
        git.commit_all("more", holds=Redactor([SECRET]).scan, refuse=_refusal, since=start)
    assert refused.value.output == "refused: .env"
    # without a secret known, the same changes are committed
    assert git.commit_all("more", holds=Redactor().scan, refuse=_refusal, since=start)


def test_a_file_is_named_as_it_is_whatever_its_name_holds(tmp_path: Path) -> None:
    """Letters beyond ASCII, a space, a tab, a quote: git quotes such names ("b/geheim-\\303\\244"),
    which the refusal said as quoted, its closing quote included."""
    git = _repo(tmp_path)
    names = ["geheim-ä.env", "my b/dir.env", "tab\there.env", 'say "hi".env']
    (Path(git.cwd) / "my b").mkdir()
    for name in names:
        (Path(git.cwd) / name).write_text(f"KEY={SECRET}\n")
    with pytest.raises(RefusedChanges) as refused:
        git.commit_all("names", holds=Redactor([SECRET]).scan, refuse=lambda files: "\n".join(sorted(files)))
    assert refused.value.output.split("\n") == sorted(names)


def test_the_diff_for_the_review_reads_only_its_start_and_masks_it(tmp_path: Path) -> None:
    """A branch that adds 32 MB: the review is given its first 60,000 characters, masked; git's
    whole output was read as text (and masked whole) first."""
    git = _repo(tmp_path)
    start = git.head()
    redactor = Redactor([SECRET])
    git.clean = redactor.text
    (Path(git.cwd) / "a.txt").write_text(f"token {SECRET}\n")
    with open(Path(git.cwd) / "big.csv", "wb") as f:
        f.write((b"0123456789abcdef" * 4 + b"\n") * (32 * 2**20 // 65))
    git.commit_all("big")
    tracemalloc.start()
    try:
        text = git.diff(start)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MB"
    assert len(text) == 60000 + len("\n… (diff truncated)\n") and text.endswith("… (diff truncated)\n")
    assert "+token [REDACTED]" in text and SECRET not in text
    assert " big.csv | " in text  # (the summary comes first)
    # a short diff is given whole
    (Path(git.cwd) / "a.txt").write_text("changed\n")
    git.commit_all("small")
    assert git.diff(git.head() + "~1").endswith("+changed\n")


def test_a_secret_the_end_of_what_is_read_of_the_diff_cuts_is_never_kept(tmp_path: Path) -> None:
    """Letters of four bytes, and masks much shorter than the secrets they replace before it: what
    is kept of the masked text could reach the read's end, where a secret may be cut in two."""
    git = _repo(tmp_path)
    start = git.head()
    long = SECRETS[3]
    git.clean = Redactor([SECRET, long]).text
    path = Path(git.cwd) / "x.txt"
    path.write_text((long + "\n") * 150 + SECRET + "\n")
    git.commit_all("x")
    at = git.run("diff", "--stat", "--patch", f"{start}...HEAD").stdout.encode().index(SECRET.encode())
    gap = 4 * 60000 + G.DIFF_MARGIN - 10 - at  # the read ends 10 bytes into the secret
    path.write_text((long + "\n") * 150 + "a" * (gap % 4) + "\U0001f600" * (gap // 4) + SECRET + "\n")
    git.commit_all("moved")
    text = git.diff(start)
    assert text.endswith("… (diff truncated)\n") and text.count("[REDACTED]") == 150
    assert SECRET[:6] not in text
    assert len(text) > 30000  # (what is left of it after the masks is kept, up to the margin)


@pytest.mark.parametrize("where", ["message", "author"])
def test_a_secret_in_a_commit_the_agent_made_itself_is_refused(tmp_path: Path, where: str) -> None:
    """The agent's own commits were read for the lines they add, not for their messages nor their
    names: `git commit -m "configure key $ANTHROPIC_API_KEY"` went to the remote."""
    git = _repo(tmp_path)
    start = git.head()
    (Path(git.cwd) / "a.txt").write_text("clean\n")
    git.run("add", "a.txt")
    message = f"configure key {SECRET}" if where == "message" else "configure"
    author = f"agent <{SECRET}@example.test>" if where == "author" else "agent <agent@example.test>"
    git.run("commit", "-q", "-m", message, f"--author={author}")
    with pytest.raises(RefusedChanges) as refused:
        git.commit_all("more", holds=Redactor([SECRET]).scan, refuse=_refusal, since=start)
    assert refused.value.output == f"refused: {G.COMMIT_MESSAGES}"
    assert git.commit_all("more", holds=Redactor(["something-else-entirely"]).scan, refuse=_refusal,
                          since=start) is None  # (nothing staged: nothing to commit, nothing refused)
