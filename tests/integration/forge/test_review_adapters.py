"""The adapters' review operations over real HTTP against the emulator, both flavours: every
review and line comment read back (all pages, oldest first), replies in the right thread, a
retried reply never posted twice, and a killed run's reply never posted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.forge.base import Forge, RetryPolicy
from runner.forge.retry import Interrupted, interrupt_on
from runner.testing.forge import ForgeEmulator
from tests.contract.forge.conftest import make_adapter

REPO = "maintainer/app"
FAST = RetryPolicy(retries=3, backoff=0.01, max_wait=2.0)
LINES = 120
BEFORE = "".join(f"line {n}\n" for n in range(1, LINES + 1))
AFTER = "".join(f"line {n} changed\n" for n in range(1, LINES + 1))


@pytest.fixture(params=["github", "forgejo"])
def emu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ForgeEmulator]:
    with ForgeEmulator(request.param, tmp_path / "forge") as forge:
        forge.add_user("maintainer")
        forge.add_user("bot")
        forge.add_user("reader")
        forge.create_repo(REPO, files={"a.py": BEFORE, "b.py": "x = 1\n"})
        forge.grant(REPO, "bot", "write")
        forge.grant(REPO, "reader", "read")
        forge.push_branch(REPO, "fix", {"a.py": AFTER, "b.py": "x = 2\n"}, as_user="bot")
        yield forge


def _bot(emu: ForgeEmulator, retry: RetryPolicy | None = None) -> Forge:
    return make_adapter(emu.flavour, emu, emu.state.user("bot").token, retry)


def _pull(emu: ForgeEmulator) -> int:
    return _bot(emu).find_or_create_pull(REPO, "fix", "main", "Fix", "body").number


def test_every_review_and_line_comment_is_read_oldest_first(emu: ForgeEmulator) -> None:
    number = _pull(emu)
    many = emu.review(REPO, number, "maintainer", "request_changes", "Lots",
                      comments=[("a.py", n, f"line {n}?") for n in range(1, 106)])
    for n in range(54):  # more than a page of Forgejo's reviews (50)
        emu.review(REPO, number, "reader" if n % 2 else "maintainer", "comment", f"note {n}")
    emu.review(REPO, number, "reader", "approve", "fine by me")
    forge = _bot(emu)

    reviews = forge.list_reviews(REPO, number)
    assert len(reviews) == 56 and reviews[0].id == many
    assert reviews[0].state == "changes_requested" and reviews[-1].state == "approved"
    assert [r.body for r in reviews[1:4]] == ["note 0", "note 1", "note 2"]
    assert reviews[-1].author == "reader"  # a reader's review is read too (steering is not)

    comments = forge.list_line_comments(REPO, number)  # more than a page of GitHub's (100)
    assert [c.line for c in comments] == list(range(1, 106))
    assert all(c.review_id == many and c.path == "a.py" for c in comments)
    assert comments[41].diff_hunk.endswith("+line 42 changed")

    pull = forge.get_pull(REPO, number)
    assert (pull.author, pull.mergeable) == ("bot", True)


def test_a_reply_to_a_reply_goes_to_the_thread(emu: ForgeEmulator) -> None:
    number = _pull(emu)
    emu.review(REPO, number, "maintainer", "request_changes", "Two things",
               comments=[("a.py", 3, "this"), ("b.py", 1, "that")])
    forge = _bot(emu)
    first, second = forge.list_line_comments(REPO, number)
    theirs = emu.reply(REPO, number, first.id, "maintainer", "and also")
    answered = next(c for c in forge.list_line_comments(REPO, number) if c.id == theirs)
    mine = forge.reply_to_line_comment(REPO, number, answered, "Done in 1234abc")
    other = forge.reply_to_line_comment(REPO, number, second, "Kept: it is used elsewhere")
    assert (mine.in_reply_to, mine.path, mine.line) == (first.id, "a.py", 3)
    assert (other.in_reply_to, other.path, other.line) == (second.id, "b.py", 1)
    threads = [(c.in_reply_to or c.id, c.body) for c in forge.list_line_comments(REPO, number)]
    assert threads == [(first.id, "this"), (second.id, "that"), (first.id, "and also"),
                       (first.id, "Done in 1234abc"), (second.id, "Kept: it is used elsewhere")]


def test_a_reply_retried_after_the_forge_acted_is_not_doubled(emu: ForgeEmulator) -> None:
    number = _pull(emu)
    emu.review(REPO, number, "maintainer", "request_changes", "Fix", comments=[("a.py", 7, "?")])
    forge = _bot(emu, FAST)
    (first,) = forge.list_line_comments(REPO, number)
    emu.fail_after_acting(1, 502, methods=("POST",))  # the reply is made, the answer lost
    made = forge.reply_to_line_comment(REPO, number, first, "Done in cafe123")
    replies = [c for c in forge.list_line_comments(REPO, number) if c.in_reply_to == first.id]
    assert [(c.id, c.body) for c in replies] == [(made.id, "Done in cafe123")]
    posts = [x for x in emu.exchanges if x.method == "POST"
             and x.path.endswith(("/replies", "/comments"))]  # GitHub's, Forgejo's reply
    assert [x.status for x in posts] == [502]  # the retry looked, found it, did not post


def test_a_reply_after_the_forge_failed_is_made_once(emu: ForgeEmulator) -> None:
    number = _pull(emu)
    emu.review(REPO, number, "maintainer", "comment", "", comments=[("b.py", 1, "hm")])
    forge = _bot(emu, FAST)
    (first,) = forge.list_line_comments(REPO, number)
    emu.fail_next(2, 503)
    forge.reply_to_line_comment(REPO, number, first, "Answered")
    bodies = [c.body for c in forge.list_line_comments(REPO, number)]
    assert bodies == ["hm", "Answered"]


def test_a_killed_run_posts_no_reply(emu: ForgeEmulator) -> None:
    number = _pull(emu)
    emu.review(REPO, number, "maintainer", "request_changes", "Fix", comments=[("a.py", 9, "!")])
    forge = _bot(emu, FAST)
    (first,) = forge.list_line_comments(REPO, number)
    killed = threading.Event()
    killed.set()
    with interrupt_on(killed), pytest.raises(Interrupted):
        forge.reply_to_line_comment(REPO, number, first, "too late")
    assert [c.body for c in forge.list_line_comments(REPO, number)] == ["!"]
