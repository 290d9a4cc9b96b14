from shared.jobs.records import ALLOWED_FROM, TERMINAL, JobRecord, State, transition_args


def test_terminal_states_are_never_a_source():
    for target, sources in ALLOWED_FROM.items():
        assert not TERMINAL & set(sources), target


def test_redelivery_may_restart_a_running_job_but_not_a_finished_one():
    assert State.RUNNING in ALLOWED_FROM[State.RUNNING]
    assert State.SUCCEEDED not in ALLOWED_FROM[State.RUNNING]


def test_record_round_trips_through_a_redis_hash():
    job = JobRecord(id="abc", tenant="t", domain="ocr", method="m", queue="ocr.cpu",
                    request_id="r1", create_time=1.5, transitions=[("QUEUED", 1.5)],
                    artifacts=[{"bucket": "b", "key": "k"}])
    h = {k.encode(): v.encode() for k, v in job.to_hash().items()}
    h[b"error"] = b'{"code": 3, "reason": "X"}'
    back = JobRecord.from_hash(h)
    assert back.id == "abc" and back.state is State.QUEUED and back.create_time == 1.5
    assert back.transitions == [("QUEUED", 1.5)] and back.error["reason"] == "X"
    assert back.name == "jobs/abc" and not back.done


def test_transition_args_list_allowed_sources():
    target, sources, now, extra = transition_args(State.FAILED, {"error": {"code": 13}})
    assert target == "FAILED" and set(sources.split(",")) == {"QUEUED", "RUNNING", "CANCELLING"}
    assert float(now) > 0 and '"error"' in extra
