"""`workflows.results` a page at a time: a page never splits a job's attempts, and following
`after_job_id` gives every attempt once, in order (the client's `results` does so for any size)."""

from __future__ import annotations


def test_pages_of_results_never_split_a_job_and_cover_every_attempt(daemon, client):
    wf = daemon.submit(
        """
        name: retried
        failure_handlers:
          - name: again
            rules: [{exit_codes: [7], max_retries: 3}]
        jobs:
          - name: j{i}
            command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 7"
            parameters: {i: "1:7"}
            failure_handler: again
        """
    )
    daemon.wait(wf)
    whole = daemon.call("workflows.results", {"workflow_id": wf})
    assert len(whole) == 14  # two attempts each
    paged, after, sizes = [], 0, []
    while page := daemon.call("workflows.results", {"workflow_id": wf, "limit": 3, "after_job_id": after}):
        assert len({a["job_id"] for a in page}) == len(page) // 2  # whole jobs only
        paged += page
        sizes.append(len(page))
        after = page[-1]["job_id"]
    assert paged == whole and sizes == [2] * 7
    assert [(a.job_id, a.attempt_id) for a in client.results(wf)] == [(a["job_id"], a["attempt_id"]) for a in whole]
    one_job = daemon.call("workflows.results", {"workflow_id": wf, "limit": 1})
    assert one_job == whole[:2]  # a job with more attempts than a page holds comes whole
