import json

from jobs.publications import PUBLISHED, Publications


def test_each_publication_is_recorded_once_and_kept_beside_the_others(tmp_path):
    run = tmp_path / "run"  # made on the first record
    assert Publications(run).get("job-1") is None
    Publications(run).record("job-1", {"ref": "demo@1"})
    Publications(run).record("cli", {"ref": "demo@2"})
    Publications(run).record("job-1", {"ref": "demo@1", "card": {"revision": 1}})  # the card, added later
    again = Publications(run)  # a rerun reads what the first run wrote
    assert again.get("job-1") == {"ref": "demo@1", "card": {"revision": 1}}
    assert again.get("cli") == {"ref": "demo@2"}
    assert json.loads((run / PUBLISHED).read_text()) == {
        "cli": {"ref": "demo@2"},
        "job-1": {"ref": "demo@1", "card": {"revision": 1}},
    }
    assert sorted(p.name for p in run.iterdir()) == [PUBLISHED]  # replaced atomically: no temporary left behind
