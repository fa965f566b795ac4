"""The report's adaptive sentence: it must say which branch of the stop rule fired and,
when the budget stopped the sweep, how far short of the threshold the decision was, so a
user does not read a budget stop as a confident one."""

from annealscale.tune.adaptive import stop_message


def _record(**kw):
    base = {
        "reason": "budget",
        "recommended": "web_filtered",
        "confidence": 0.625,
        "threshold": 0.9,
        "held_out_ok": False,
        "spent": 9.22,
        "grid_cost": 15.63,
    }
    return {**base, **kw}


def test_budget_stop_says_how_sure_the_proposer_was_and_what_it_saved():
    text = stop_message(_record())
    assert "its budget was spent" in text
    assert "web_filtered is best was 62%, short of the 90% threshold" in text
    assert "saved $6.41, 41% of the grid's compute" in text


def test_budget_stop_past_the_threshold_blames_the_held_out_checks():
    text = stop_message(_record(confidence=0.95))
    assert "was 95%, but not every source's fit had passed a held-out check" in text
    assert "short of" not in text


def test_confident_stop_names_threshold_and_checks():
    text = stop_message(_record(reason="confident", confidence=0.93, held_out_ok=True))
    assert text.startswith(
        "Adaptive sweep: stopped because the proposer's posterior probability that "
        "web_filtered is best was 93% (threshold 90%) and every source's held-out check passed."
    )


def test_stop_before_any_fit_says_only_why_and_the_final_spend_counts():
    record = _record(reason="exhausted", recommended=None, confidence=None)
    record["final"] = {"spent": 15.63, "grid_cost": 15.63}
    text = stop_message(record)
    assert "every cell had run." in text and "probability" not in text
    assert "saved $0, 0% of the grid's compute" in text
    assert "the stop rule fired" in stop_message({"final": {}})
