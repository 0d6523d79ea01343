"""The seed transcript's run as a script: edit → test → edit → test → submit.

The two loss bodies are the seed agent's own (../shared/seed), verbatim; only
the line numbers follow this template's compute_loss region.
"""

from __future__ import annotations

from tests.agent.scripted_models import ScriptedTurn

FILENAME = "nanoGPT/custom_pretrain.py"

POLY_Z_LOSS = (
    "def compute_loss(logits, targets):\n"
    '    """Enhanced cross-entropy with PolyLoss-1 correction and z-loss.\n'
    "\n"
    "    Novel combination for LLM pretraining:\n"
    "    - Label smoothing (0.05): distributional regularization\n"
    "    - PolyLoss-1 (eps=1): amplifies gradients for partially-learned tokens\n"
    "      by adding eps*(1-p_target), modifying gradient to (p_t-1)*(1+eps*p_t)\n"
    "    - Z-loss (1e-4): stabilizes the log-partition function\n"
    "    Standard CE during evaluation for fair comparison.\n"
    '    """\n'
    "    flat_logits = logits.view(-1, logits.size(-1))\n"
    "    flat_targets = targets.view(-1)\n"
    "    if not torch.is_grad_enabled():\n"
    "        return F.cross_entropy(flat_logits, flat_targets, ignore_index=-1)\n"
    "    # Label-smoothed cross-entropy\n"
    "    ce = F.cross_entropy(flat_logits, flat_targets, ignore_index=-1, label_smoothing=0.05)\n"
    "    # PolyLoss-1: eps*(1 - p_target) for enhanced gradient signal\n"
    "    logits_f = flat_logits.float()\n"
    "    log_z = torch.logsumexp(logits_f, dim=-1)\n"
    "    tgt_logit = logits_f.gather(1, flat_targets.unsqueeze(1)).squeeze(1)\n"
    "    pt = (tgt_logit - log_z).exp()\n"
    "    poly = (1.0 - pt).mean()\n"
    "    # Z-loss: penalize large log-partition values for stability\n"
    "    z_loss = 1e-4 * (log_z ** 2).mean()\n"
    "    return ce + poly + z_loss\n"
    "\n"
)

SOFTCAP_LS_Z_LOSS = (
    "def compute_loss(logits, targets):\n"
    '    """Multi-regularized cross-entropy: tanh softcap + label smoothing + z-loss.\n'
    "\n"
    "    Novel combination addressing three distinct failure modes in LLM pretraining:\n"
    "    1. Tanh softcap (cap=30) bounds logit magnitudes, preventing gradient\n"
    "       instability from extreme logit values (inspired by Gemma 2)\n"
    "    2. Label smoothing (eps=0.1) redistributes probability mass, preventing\n"
    "       overconfident predictions and improving generalization\n"
    "    3. Z-loss (1e-4) penalizes large log-partition values, stabilizing the\n"
    "       log-softmax computation (inspired by PaLM)\n"
    "    Standard CE used during evaluation for fair comparison.\n"
    '    """\n'
    "    flat_logits = logits.view(-1, logits.size(-1))\n"
    "    flat_targets = targets.view(-1)\n"
    "    if not torch.is_grad_enabled():\n"
    "        return F.cross_entropy(flat_logits, flat_targets, ignore_index=-1)\n"
    "    # Tanh-based logit softcapping: bounds to [-cap, cap]\n"
    "    cap = 30.0\n"
    "    capped = cap * torch.tanh(flat_logits.float() / cap)\n"
    "    # Cross-entropy with label smoothing\n"
    "    ce = F.cross_entropy(capped, flat_targets, ignore_index=-1, label_smoothing=0.1)\n"
    "    # Z-loss: penalize large log-partition values for stability\n"
    "    log_z = torch.logsumexp(capped, dim=-1)\n"
    "    z_loss = 1e-4 * (log_z ** 2).mean()\n"
    "    return ce + z_loss\n"
    "\n"
)


def seed_turns(start: int, end: int) -> list[ScriptedTurn]:
    """The five steps, given the compute_loss region's lines (start..end) at session start."""
    first_end = start + len(POLY_Z_LOSS.splitlines()) - 1
    edit = {"op": "replace", "filename": FILENAME}
    return [
        ScriptedTurn(
            "I'll combine label smoothing, PolyLoss-1 and z-loss.",
            [("edit", {**edit, "start_line": start, "end_line": end, "content": POLY_Z_LOSS})],
        ),
        ScriptedTurn("Now let me test this.", [("test", {})]),
        ScriptedTurn(
            "Let me try tanh softcapping with label smoothing and z-loss instead.",
            [
                (
                    "edit",
                    {
                        **edit,
                        "start_line": start,
                        "end_line": first_end,
                        "content": SOFTCAP_LS_Z_LOSS,
                    },
                )
            ],
        ),
        ScriptedTurn("", [("test", {})]),
        ScriptedTurn("Test #1 was better; submitting it.", [("submit", {"n": 1})]),
    ]
