"""The in-memory copies of keyed state: trusted only while the state's token is theirs."""

from transforms.state_copies import StateCopies


class _Copy:
    def __init__(self, token, value):
        self.token, self.value = token, value


def test_a_copy_is_used_while_the_state_holds_its_token_and_read_again_otherwise():
    copies, loads = StateCopies(), []

    def load(token, value):
        loads.append(value)
        return _Copy(token, value)

    first = copies.get("k", None, lambda: load(None, "from state"))
    stored = copies.written(first)  # written to state with the copy's other writes
    first.value = "changed here"
    assert copies.get("k", stored, lambda: load(stored, "again")) is first  # nobody else wrote
    assert copies.get("k", stored + 1, lambda: load(stored + 1, "theirs")).value == "theirs"  # another writer
    assert copies.get("k", None, lambda: load(None, "cleared")).value == "cleared"  # state gone: read again
    assert loads == ["from state", "theirs", "cleared"]
    assert copies.get("other", stored, lambda: load(stored, "own key")).value == "own key"  # copies are per key
    copies.forget("k")
    assert copies.peek("k") is None and len(copies) == 1


def test_each_write_gives_a_new_token():
    copies, copy = StateCopies(), _Copy(None, 0)
    tokens = {copies.written(copy) for _ in range(100)}
    assert len(tokens) == 100 and copy.token in tokens
