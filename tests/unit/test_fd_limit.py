"""``python -m gateway`` lifts its open-file limit: with the usual soft default (1,024) a
gateway process would refuse connections long before its memory ran out."""

from __future__ import annotations

import resource

from gateway.__main__ import raise_open_file_limit


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = raise_open_file_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
        else:
            assert raised >= 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
