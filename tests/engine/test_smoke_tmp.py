from aiimpl_core.services.dispatch import run_cycle
from .conftest import jobs_of

def test_smoke(app, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1")
    report = run_cycle()
    print(report.as_dict())
    jobs = jobs_of("ENG-1")
    assert len(jobs) == 1 and jobs[0].status == "dispatched"
    assert tracker.stage_labels("ENG-1") == {"AI-Working"}
    report = run_cycle()
    print(report.as_dict())
    assert len(jobs_of("ENG-1")) == 1
