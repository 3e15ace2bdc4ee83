"""Stop and leave requests cross between ranks on the host, one step late, the same on every rank."""

from bigbatch.trainer.distributed.collective import LocalCollective
from bigbatch.trainer.run.stop import StopVote
from tests.gloo import spawn_gloo


def _ranks(rank: int, world: int) -> None:
    from bigbatch.cluster.backends.torch_dist import TorchDistributedCollective

    vote = StopVote(TorchDistributedCollective())
    heard = []
    for step in range(1, 7):
        stop = rank == 2 and step == 3  # rank 2 is asked to stop during step 3
        leave = rank == world - 1 and step == 5  # the last rank is leaving during step 5
        heard.append(vote.exchange(stop, leave))
    vote.close()
    assert heard == [(False, False), (False, False), (False, False), (True, False), (False, False),
                     (False, True)], (rank, heard)


def test_eight_ranks_hear_a_request_one_step_after_it_was_made():
    spawn_gloo(_ranks, 8)


def test_one_process_hears_its_own_request_at_once():
    vote = StopVote(LocalCollective())
    assert vote.exchange(True, False) == (True, False) and vote.exchange(False, True) == (False, True)
