"""The edit engine: texts as in the seed transcript, region shifting, errors, undo, state."""

from __future__ import annotations

import json

import pytest
from envtest_helpers import HEADING, SCRIPT

from lossgym.env.workspace import Region, Workspace
from lossgym.errors import AgentError

# The content of the seed transcript's Step 1 edit, verbatim.
SEED_CONTENT = (
    'def compute_loss(logits, targets):\n    """Enhanced cross-entropy with PolyLoss-1 correction'
    " and z-loss.\n\n    Novel combination for LLM pretraining:\n    - Label smoothing (0.05): "
    "distributional regularization\n    - PolyLoss-1 (eps=1): amplifies gradients for "
    "partially-learned tokens\n      by adding eps*(1-p_target), modifying gradient to "
    "(p_t-1)*(1+eps*p_t)\n    - Z-loss (1e-4): stabilizes the log-partition function\n    "
    'Standard CE during evaluation for fair comparison.\n    """\n    flat_logits = '
    "logits.view(-1, logits.size(-1))\n    flat_targets = targets.view(-1)\n    if not "
    "torch.is_grad_enabled():\n        return F.cross_entropy(flat_logits, flat_targets, "
    "ignore_index=-1)\n    # Label-smoothed cross-entropy\n    ce = F.cross_entropy(flat_logits, "
    "flat_targets, ignore_index=-1, label_smoothing=0.05)\n    # PolyLoss-1: eps*(1 - p_target) "
    "for enhanced gradient signal\n    logits_f = flat_logits.float()\n    log_z = "
    "torch.logsumexp(logits_f, dim=-1)\n    tgt_logit = logits_f.gather(1, "
    "flat_targets.unsqueeze(1)).squeeze(1)\n    pt = (tgt_logit - log_z).exp()\n    poly = "
    "(1.0 - pt).mean()\n    # Z-loss: penalize large log-partition values for stability\n    "
    "z_loss = 1e-4 * (log_z ** 2).mean()\n    return ce + poly + z_loss\n\n"
)

# The seed's Step 1 tool result, as far as the transcript shows it.
SEED_RESULT_HEAD = f"""\
OK: Replaced lines 188..191 with 26 line(s) in nanoGPT/custom_pretrain.py. \
Editable range: 188–213, 269–271.

[Current file: nanoGPT/custom_pretrain.py | editable: 188–213 | total: 461 lines]
   185|         return optimizer
   186| \n   187| {HEADING}
   188  def compute_loss(logits, targets):
   189      \"\"\"Enhanced cross-entropy with PolyLoss-1 correction and z-loss.
   190  \n   191      Novel combination for LLM pretraining:
   192      - Label smoothing (0.05): distributional regularization
   193      - PolyLoss-1 (eps=1): amplifies gradients for partially-learned tokens
   194        by adding eps*(1-p_target), modifying gradient to (p_t-1)*(1+eps*p_t)
   195      - Z-loss (1e-4): stabilizes the log-partition function
   196      Standard CE during evaluation for fair comparison.
   197      \"\"\"
   198      flat_logits = logits.view(-1, logits.size(-1))
   199      flat_targets = targets.view(-1)
   200      if n"""


def spans(ws: Workspace, path: str = SCRIPT) -> list[tuple[int, int]]:
    return [(r.start, r.end) for r in ws.regions_of(path)]


def test_seed_replace_text_is_exact(ws: Workspace) -> None:
    out = ws.replace(SCRIPT, 188, 191, SEED_CONTENT)
    assert out.startswith(SEED_RESULT_HEAD)
    assert out.splitlines()[0] == (
        "OK: Replaced lines 188..191 with 26 line(s) in nanoGPT/custom_pretrain.py. "
        "Editable range: 188–213, 269–271."
    )
    assert out.splitlines()[-4:] == ["   213  ", "   214| line_192 = 192"] + [
        "   215| line_193 = 193",
        "   216| line_194 = 194",
    ]
    assert spans(ws) == [(188, 213), (269, 271)]


def test_seed_second_edit_keeps_ranges(ws: Workspace) -> None:
    ws.replace(SCRIPT, 188, 191, SEED_CONTENT)
    out = ws.replace(SCRIPT, 188, 213, SEED_CONTENT.replace("PolyLoss-1", "Poly"))
    assert out.startswith(
        "OK: Replaced lines 188..213 with 26 line(s) in nanoGPT/custom_pretrain.py. "
        "Editable range: 188–213, 269–271.\n\n"
        "[Current file: nanoGPT/custom_pretrain.py | editable: 188–213 | total: 461 lines]\n"
    )


def test_content_lines_follow_splitlines(ws: Workspace) -> None:
    ws.replace(SCRIPT, 188, 191, "a\nb")
    assert spans(ws) == [(188, 189), (245, 247)]
    ws.replace(SCRIPT, 188, 189, "a\nb\n")
    assert spans(ws) == [(188, 189), (245, 247)]
    ws.replace(SCRIPT, 188, 189, "a\nb\n\n")
    assert spans(ws) == [(188, 190), (246, 248)]
    assert ws.files[SCRIPT].splitlines()[187:191] == ["a", "b", "", "line_192 = 192"]


def test_shrink_and_grow_shift_later_regions(ws: Workspace) -> None:
    ws.replace(SCRIPT, 189, 190, "")  # delete two lines inside the region
    assert spans(ws) == [(188, 189), (245, 247)]
    ws.replace(SCRIPT, 246, 246, "x = 1\ny = 2\nz = 3")  # grow the later region
    assert spans(ws) == [(188, 189), (245, 249)]
    assert ws.files[SCRIPT].count("\n") == 439 - 2 + 2


def test_editing_later_region_leaves_earlier_alone(ws: Workspace) -> None:
    out = ws.replace(SCRIPT, 247, 249, "loss_progress = 0.5\n")
    assert spans(ws) == [(188, 191), (247, 247)]
    assert "editable: 247–247 | total: 437 lines]" in out
    assert "   246| " in out and "   247  loss_progress = 0.5" in out


def test_view_format(ws: Workspace) -> None:
    out = ws.view(SCRIPT, 186, 192)
    assert out.splitlines() == [
        "[Current file: nanoGPT/custom_pretrain.py | editable: 188–191, 247–249 "
        "| total: 439 lines]",
        "   186| ",
        f"   187| {HEADING}",
        "   188  def compute_loss(logits, targets):",
        '   189      """Standard cross-entropy."""',
        "   190      return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))",
        "   191  ",
        "   192| line_192 = 192",
    ]
    assert len(ws.view(SCRIPT).splitlines()) == 440
    assert "| editable: none | total: 2 lines]" in ws.view("nanoGPT/README.txt")


def test_render_listing(ws: Workspace) -> None:
    lines = ws.render_listing(SCRIPT).splitlines()
    assert lines[0] == "nanoGPT/custom_pretrain.py [EDITABLE — lines 188–191, lines 247–249 only]"
    assert lines[1] == ""
    assert lines[2] == "     1: line_1 = 1"
    assert lines[2 + 185] == "   186: "
    assert len(lines) == 2 + 439


ERROR_CASES = {
    "outside": (
        lambda w: w.replace(SCRIPT, 180, 190, "x"),
        "ERROR: Lines 180..190 are outside the editable ranges of nanoGPT/custom_pretrain.py. "
        "You can only edit lines 188–191, 247–249.",
    ),
    "fully_outside": (lambda w: w.replace(SCRIPT, 5, 5, "x"), "Line 5 is outside"),
    "spanning": (lambda w: w.replace(SCRIPT, 190, 248, "x"), "span more than one editable"),
    "inverted": (lambda w: w.replace(SCRIPT, 191, 188, "x"), "start_line (191) is greater"),
    "zero": (lambda w: w.replace(SCRIPT, 0, 190, "x"), "Line numbers start at 1"),
    "past_end": (lambda w: w.replace(SCRIPT, 430, 500, "x"), "past the end"),
    "empty_region": (lambda w: w.replace(SCRIPT, 188, 191, ""), "leave the editable region"),
    "read_only": (lambda w: w.replace("nanoGPT/README.txt", 1, 1, "x"), "is read-only"),
    "unknown_file": (lambda w: w.replace("nope.py", 1, 1, "x"), 'No file "nope.py"'),
    "traversal": (lambda w: w.replace("../etc/passwd", 1, 1, "x"), '".."'),
    "traversal_inner": (lambda w: w.replace("nanoGPT/../x.py", 1, 1, "x"), '".."'),
    "absolute": (lambda w: w.replace("/etc/passwd", 1, 1, "x"), "is absolute"),
    "backslash": (lambda w: w.replace("nanoGPT\\x.py", 1, 1, "x"), "use"),
    "nul_name": (lambda w: w.replace("a\x00b", 1, 1, "x"), "NUL"),
    "empty_name": (lambda w: w.replace("", 1, 1, "x"), "filename is empty"),
    "oversize": (lambda w: w.replace(SCRIPT, 188, 191, "x" * 70_000), "the limit is 65536"),
    "nul_content": (lambda w: w.replace(SCRIPT, 188, 191, "a\x00"), "NUL"),
    "surrogate": (lambda w: w.replace(SCRIPT, 188, 191, "\ud800"), "not valid UTF-8"),
    "insert_outside": (lambda w: w.insert(SCRIPT, 100, "x"), "Cannot insert after line 100"),
    "insert_past_end": (lambda w: w.insert(SCRIPT, 440, "x"), "after_line=440"),
    "insert_empty": (lambda w: w.insert(SCRIPT, 190, ""), "content is empty"),
    "create_existing": (lambda w: w.create(SCRIPT, "x"), "already exists"),
    "create_python": (lambda w: w.create("nanoGPT/torch.py", "x"), "cannot make files"),
    "create_clash": (lambda w: w.create("nanoGPT", "x"), "clash"),
    "create_traversal": (lambda w: w.create("../notes.txt", "x"), '".."'),
    "create_empty": (lambda w: w.create("notes.txt", ""), "content is empty"),
    "undo_nothing": (lambda w: w.undo(), "Nothing to undo"),
    "undo_zero": (lambda w: w.undo(0), "at least 1"),
    "view_unknown": (lambda w: w.view("x.txt"), 'No file "x.txt"'),
    "view_range": (lambda w: w.view(SCRIPT, 400, 500), "Cannot show lines 400..500"),
    "view_inverted": (lambda w: w.view(SCRIPT, 10, 5), "Cannot show lines 10..5"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_change_nothing(ws: Workspace, case: str) -> None:
    action, expected = ERROR_CASES[case]
    before = ws.to_state()
    with pytest.raises(AgentError) as info:
        action(ws)
    text = str(info.value)
    assert text.startswith("ERROR: ")
    assert expected in text
    assert ws.to_state() == before


def test_range_errors_name_the_editable_ranges(ws: Workspace) -> None:
    for start, end in [(180, 190), (190, 248), (191, 188), (0, 190), (430, 500)]:
        with pytest.raises(AgentError, match="188–191, 247–249"):
            ws.replace(SCRIPT, start, end, "x")


def test_oversize_file_refused() -> None:
    small = Workspace({"a.txt": "x\n"}, {"a.txt": [Region("r", 1, 1)]}, max_file_bytes=100)
    with pytest.raises(AgentError, match="the limit is 100 bytes"):
        small.replace("a.txt", 1, 1, "y\n" * 60)
    assert small.files["a.txt"] == "x\n"


def test_insert_joins_region_and_shifts(ws: Workspace) -> None:
    out = ws.insert(SCRIPT, 191, "extra = 1\nmore = 2")
    assert out.startswith(
        "OK: Inserted 2 line(s) after line 191 in nanoGPT/custom_pretrain.py. "
        "Editable range: 188–193, 249–251.\n\n"
        "[Current file: nanoGPT/custom_pretrain.py | editable: 188–193 | total: 441 lines]\n"
    )
    ws.insert(SCRIPT, 187, "top = 0")  # at the start edge: the line becomes the region's first
    assert spans(ws) == [(188, 194), (250, 252)]
    assert ws.files[SCRIPT].splitlines()[187] == "top = 0"
    ws.insert(SCRIPT, 252, "last = 1")
    assert spans(ws) == [(188, 194), (250, 253)]


def test_create_and_undo(ws: Workspace) -> None:
    out = ws.create("notes/ideas.md", "# ideas\n- z-loss\n")
    assert out.startswith(
        "OK: Created notes/ideas.md with 2 line(s). Editable range: 1–2.\n\n"
        "[Current file: notes/ideas.md | editable: 1–2 | total: 2 lines]\n"
        "     1  # ideas\n"
    )
    ws.replace("notes/ideas.md", 2, 2, "- label smoothing")
    assert ws.files["notes/ideas.md"] == "# ideas\n- label smoothing\n"
    ws.undo(2)
    assert "notes/ideas.md" not in ws.files


def test_undo_restores_content_and_regions(ws: Workspace) -> None:
    original = ws.to_state()
    ws.replace(SCRIPT, 188, 191, SEED_CONTENT)
    after_first = ws.to_state()
    ws.replace(SCRIPT, 269, 271, "loss_progress = 1.0")
    with pytest.raises(AgentError, match="only 2 edit"):
        ws.undo(3)
    out = ws.undo()
    assert out.splitlines()[0] == "OK: Undid 1 edit(s); 1 earlier edit(s) can still be undone."
    assert "Reverted: replace lines 269..271 in nanoGPT/custom_pretrain.py." in out
    assert "Editable range: nanoGPT/custom_pretrain.py lines 188–213, 269–271." in out
    assert ws.to_state()["files"] == after_first["files"]
    assert spans(ws) == [(188, 213), (269, 271)]
    ws.undo(1)
    assert ws.to_state() == original


def test_state_round_trip_is_json(ws: Workspace) -> None:
    ws.replace(SCRIPT, 188, 191, SEED_CONTENT)
    ws.create("notes.txt", "hello")
    state = json.loads(json.dumps(ws.to_state()))
    again = Workspace.from_state(state)
    assert again.to_state() == ws.to_state()
    assert again.content_hash() == ws.content_hash()
    again.undo(2)
    assert spans(again) == [(188, 191), (247, 249)]


def test_hash_and_diff(ws: Workspace) -> None:
    original = dict(ws.files)
    first_hash = ws.content_hash()
    assert ws.diff_against(original) == ""
    ws.replace(SCRIPT, 190, 190, "    return 0.0")
    ws.create("notes.txt", "hi")
    assert ws.content_hash() != first_hash
    diff = ws.diff_against(original)
    assert "--- a/nanoGPT/custom_pretrain.py\n+++ b/nanoGPT/custom_pretrain.py\n" in diff
    assert "\n+    return 0.0\n" in diff and "\n-    return F.cross_entropy(" in diff
    assert "--- /dev/null\n+++ b/notes.txt\n" in diff


def test_constructor_rejects_bad_regions() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Workspace({"a": "1\n2\n3\n"}, {"a": [Region("x", 1, 2), Region("y", 2, 3)]})
    with pytest.raises(ValueError, match="not inside"):
        Workspace({"a": "1\n"}, {"a": [Region("x", 1, 2)]})
