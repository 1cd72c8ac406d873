"""The prompt-lookup probe's replay: drafts come from the latest earlier match, and a forward
always yields its own token besides the accepted drafts."""

from suites.throughput.lookup_probe import draft, forwards_needed


def test_draft_follows_the_latest_match_of_the_longest_tail():
    assert draft([1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3], 2) == [7, 1]  # the later "1 2 3" wins
    assert draft([5, 6, 7], 4) == []  # no earlier occurrence of any tail
    assert draft([4, 9, 8, 4, 9], 3) == [8, 4, 9]  # a 2-gram match, cut at the end of history
    assert draft([4, 8, 4], 3) == []  # a lone token's match is too weak to draft from


def test_no_drafts_means_one_token_per_forward():
    assert forwards_needed([1, 2, 3], [10, 11, 12, 13], 4) == 4


def test_a_repeated_line_is_accepted_in_drafts():
    line = [7, 8, 9, 10]
    # the answer repeats the prompt's line: after its first token, each forward takes 4 drafts + 1
    assert forwards_needed(line, line * 3, 4) < len(line * 3) / 2


def test_a_wrong_draft_costs_nothing_but_its_forward():
    # the draft says 2 after 1, the answer says 5: the forward still yields 5 itself
    assert forwards_needed([1, 2], [1, 5], 4) == 2
