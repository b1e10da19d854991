import pytest

from evoforge.candidate import Candidate, detect_language, source_hash

SRC = "import torch\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"


def test_hash_ignores_comments_and_layout() -> None:
    noisy = "# a comment\nimport torch\n\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):  # why\n" \
            "        return x*2\n"
    assert source_hash(noisy) == source_hash(SRC)


def test_hash_changes_with_code() -> None:
    assert source_hash(SRC) != source_hash(SRC.replace("2", "3"))


def test_hash_of_invalid_python_is_stable() -> None:
    broken = "def f(:\n  pass\n"
    assert source_hash(broken) == source_hash(broken + "\n\n")


def test_language_detection() -> None:
    assert detect_language(SRC) == "torch"
    assert detect_language("import triton\n@triton.jit\ndef k(): pass\n") == "triton"
    assert detect_language("from torch.utils.cpp_extension import load_inline\n") == "cuda"


def test_candidate_round_trips_through_a_dict() -> None:
    c = Candidate(name="c", source=SRC, labels=["bf16 compute"], lineage={"generation": 2})
    again = Candidate.from_dict(c.to_dict())
    assert again == c and again.hash == c.hash and again.language == "torch"


def test_hash_is_computed_once_per_source(monkeypatch: pytest.MonkeyPatch) -> None:
    import evoforge.candidate as candidate

    calls = []
    real = candidate.source_hash
    monkeypatch.setattr(candidate, "source_hash", lambda s: calls.append(s) or real(s))
    c = Candidate(name="c", source=SRC)
    assert c.hash == c.hash == source_hash(SRC) and len(calls) == 1
    c.source = SRC.replace("2", "3")  # a new source gets a new hash
    assert c.hash == source_hash(c.source) and len(calls) == 2


def test_a_known_hash_is_taken_as_given() -> None:
    """The store's candidates keep the hash they were added (and evaluated) under."""
    c = Candidate(name="c", source=SRC).with_hash("0123456789abcdef")
    assert c.hash == "0123456789abcdef" and c.to_dict()["hash"] == "0123456789abcdef"
