import logging

import pytest

from transforms.ingest.log_repeats import RepeatFilter, quiet_repeats


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _logger(name, clock, every_s=30.0):
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    seen = []

    class _Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.levelno, record.getMessage()))

    logger.handlers[:] = [_Keep()]
    logger.filters[:] = [RepeatFilter(every_s, clock)]
    return logger, seen


def _refused(n, port=9092):
    return "FAIL [rdkafka#consumer-%d] Connect to 127.0.0.1:%d failed: Connection refused (after %dms)", n, port, n


def test_repeats_within_the_interval_are_held_back_and_counted_on_the_next_line():
    clock = _Clock()
    logger, seen = _logger("t.repeats", clock)
    for n in range(50):  # consumers, ports and timings differ: one kind of complaint
        logger.error(*_refused(n, 9000 + n))
        clock.now += 0.1
    assert seen == [(logging.ERROR, "FAIL [rdkafka#consumer-0] Connect to 127.0.0.1:9000 failed: Connection refused "
                                    "(after 0ms)")]  # fmt: skip
    clock.now = 31
    logger.error(*_refused(7))
    assert seen[-1] == (logging.ERROR, "FAIL [rdkafka#consumer-7] Connect to 127.0.0.1:9092 failed: Connection "
                                       "refused (after 7ms) (and 49 like it since the last one shown)")  # fmt: skip
    clock.now = 62
    logger.error(*_refused(8))
    assert seen[-1][1].endswith("(after 8ms)")  # nothing was held back since


def test_other_kinds_and_levels_pass_at_once():
    clock = _Clock()
    logger, seen = _logger("t.kinds", clock)
    logger.error(*_refused(1))
    logger.warning(*_refused(1))
    logger.error("Broker transport failure")
    logger.error(*_refused(2))
    assert [level for level, _ in seen] == [logging.ERROR, logging.WARNING, logging.ERROR]


def test_quiet_repeats_adds_one_filter_and_rejects_a_bad_interval():
    logger = logging.getLogger("t.once")
    quiet_repeats(logger)
    quiet_repeats(logger)
    assert sum(isinstance(f, RepeatFilter) for f in logger.filters) == 1
    with pytest.raises(ValueError, match="every_s"):
        RepeatFilter(0)
