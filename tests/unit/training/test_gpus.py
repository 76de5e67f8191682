import pytest

from pipelines.training.gpus import gpu_lease

pytestmark = pytest.mark.unit


def test_two_jobs_never_share_a_gpu(tmp_path):
    with gpu_lease(2, tmp_path) as a, gpu_lease(2, tmp_path) as b:
        assert {a, b} == {0, 1}
        with pytest.raises(TimeoutError, match="no free GPU among 2"):
            with gpu_lease(2, tmp_path, wait_s=0):
                pass
    with gpu_lease(2, tmp_path) as c:
        assert c == 0  # released again


def test_cpu_machines_lease_nothing(tmp_path):
    with gpu_lease(0, tmp_path) as g:
        assert g is None
