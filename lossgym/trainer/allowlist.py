"""What the agent's code may touch: the one allowlist (SPEC §6.1).

Two walls read this file. The static policy (`lossgym/sandbox/policy.py`)
refuses any attribute whose name is not listed here, whatever object it is
read from, and any name that is not a listed builtin, module, loss-state name
or the region's own definition. At run time (`lossgym/trainer/agent_code.py`)
the regions execute in a namespace built from the same lists: `torch`, `F`,
`nn` and `math` there are stand-ins holding only the listed functions, and
the builtins are only the listed ones. Nothing here imports torch.

Deliberately absent: anything that reaches a module, the file system,
serialization, processes, threads, the RNG state, hooks, frames, generators,
the autograd graph (`.grad_fn`, `.data`, `.grad`, `.backward`), `.numpy` and
`str.format`. To allow a function, add its name to the right list below and
to a policy test.
"""

from __future__ import annotations

# Functions and constants of `torch` a loss may call. `torch.nn` is the `nn`
# stand-in below. No `torch.Tensor`: called, it hands out uninitialised memory
# as `empty` would (use `torch.is_tensor` to check a value).
TORCH = frozenset(
    """
    abs absolute acos acosh add addcdiv addcmul addmm all allclose amax amin aminmax any
    arange argmax argmin argsort as_tensor asin asinh atan atan2 atanh baddbmm bernoulli
    bmm broadcast_tensors broadcast_to bucketize cat ceil chunk clamp clamp_max clamp_min
    clip clone concat concatenate cos cosh count_nonzero cross cummax cummin cumprod cumsum
    diag diag_embed diagonal diff digamma dist div divide dot einsum eq
    equal erf erfc erfinv exp exp2 expm1 eye flatten flip float_power floor floor_divide
    fmax fmin fmod frac full full_like gather ge greater greater_equal gt hstack hypot
    index_select inner is_floating_point is_grad_enabled is_tensor isclose isfinite isinf
    isnan isneginf isposinf kthvalue le lerp less less_equal lgamma linspace log log10
    log1p log2 log_softmax logaddexp logaddexp2 logcumsumexp logical_and logical_not
    logical_or logical_xor logit logspace logsumexp lt masked_fill masked_select matmul max
    maximum mean median min minimum mm mul multinomial multiply mv nan_to_num nanmean
    nanmedian nansum narrow ne neg negative nonzero norm normal not_equal numel ones
    ones_like outer permute pow prod quantile rand rand_like randint randint_like randn
    randn_like randperm reciprocal relu remainder repeat_interleave reshape roll round
    rsqrt scatter scatter_add scatter_reduce searchsorted select sigmoid sign signbit sin
    sinh softmax sort split sqrt square squeeze stack std std_mean sub subtract sum t take
    take_along_dim tan tanh tensor tensordot tile topk trace transpose tril triu
    true_divide trunc unbind unique unsqueeze var var_mean vstack where xlogy zeros
    zeros_like
    no_grad enable_grad finfo iinfo result_type promote_types Size nn
    float float16 float32 float64 bfloat16 half double int int8 int16 int32 int64 long
    uint8 bool e pi inf nan
    """.split()
)

# torch.nn.functional, reachable as `F`, `nn.functional` and `torch.nn.functional`.
FUNCTIONAL = frozenset(
    """
    binary_cross_entropy binary_cross_entropy_with_logits celu cosine_embedding_loss
    cosine_similarity cross_entropy dropout elu gaussian_nll_loss gelu glu gumbel_softmax
    hardshrink hardsigmoid hardswish hardtanh hinge_embedding_loss huber_loss kl_div
    l1_loss layer_norm leaky_relu linear log_softmax logsigmoid margin_ranking_loss mish
    mse_loss multi_margin_loss multilabel_margin_loss multilabel_soft_margin_loss nll_loss
    normalize one_hot pad pairwise_distance poisson_nll_loss relu relu6 rms_norm selu
    sigmoid silu smooth_l1_loss soft_margin_loss softmax softmin softplus softshrink
    softsign tanh tanhshrink threshold triplet_margin_loss
    """.split()
)

# torch.nn: the functional module and the loss modules (a module's own methods
# are held to TENSOR_ATTRIBUTES: calling it works, reaching its hooks does not).
NN = frozenset(
    """
    functional BCELoss BCEWithLogitsLoss CrossEntropyLoss HuberLoss KLDivLoss L1Loss
    LogSoftmax MSELoss NLLLoss SmoothL1Loss Softmax
    """.split()
)

MATH = frozenset(
    """
    acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist e
    erf erfc exp exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf
    isclose isfinite isinf isnan isqrt lcm ldexp lgamma log log10 log1p log2 modf nan
    nextafter perm pi pow prod radians remainder sin sinh sqrt tan tanh tau trunc ulp
    """.split()
)

# Methods and properties of tensors (and of the few Python values a loss builds:
# lists, dicts, tuples, torch.finfo). In-place methods are fine on tensors the
# loss made; the logits it receives must not be written (AgentLoss checks).
# No `empty`: uninitialised memory would hand back the process's old tensors.
TENSOR_ATTRIBUTES = frozenset(
    """
    T mT abs abs_ acos add add_ addcdiv addcmul addmm all allclose amax amin aminmax any
    argmax argmin argsort bfloat16 bmm bool broadcast_to ceil chunk clamp clamp_ clamp_max
    clamp_min clip clone contiguous copy_ cos cosh count_nonzero cpu cummax cummin cumprod
    cumsum device diag diagonal diff digamma dim div div_ double dtype eq equal erf erfc exp
    exp_ expand expand_as expm1 fill_ flatten flip float floor floor_divide fmax fmin fmod
    frac gather ge gt half index_add index_fill index_select int is_contiguous
    is_floating_point isfinite isinf isnan item kthvalue le lerp lgamma log log10 log1p
    log2 log_ log_softmax logaddexp logcumsumexp logical_and logical_not logical_or
    logical_xor logit logsumexp long lt masked_fill masked_fill_ masked_scatter
    masked_select matmul max maximum mean median min minimum mm mul mul_ mv nan_to_num
    nanmean nanmedian nansum narrow ndim ndimension ne neg neg_ new_full new_ones
    new_tensor new_zeros nonzero norm numel permute pow pow_ prod quantile reciprocal relu
    remainder repeat repeat_interleave requires_grad reshape reshape_as roll round rsqrt
    scatter scatter_ scatter_add scatter_add_ scatter_reduce select shape sigmoid sign sin
    sinh size softmax sort split sqrt square squeeze std sub sub_ sum t take_along_dim tan
    tanh to tolist topk transpose tril triu trunc type_as unbind unflatten unique unsqueeze
    values indices var view view_as where xlogy zero_
    append extend items keys get pop eps tiny max min bits
    """.split()
)

ATTRIBUTES = TORCH | FUNCTIONAL | NN | MATH | TENSOR_ATTRIBUTES

# Builtins the regions may call; everything else (open, exec, getattr, type,
# vars, globals, __import__, ...) does not exist for them. `print` there
# prefixes every line it writes, so it cannot forge a TRAIN_METRICS line.
BUILTINS = frozenset(
    """
    abs all any bool dict divmod enumerate filter float int isinstance len list map max
    min pow print range reversed round set slice sorted sum tuple zip
    ArithmeticError AssertionError Exception IndexError KeyError NameError RuntimeError
    TypeError ValueError ZeroDivisionError
    """.split()
)

MODULES = frozenset({"torch", "F", "nn", "math"})  # the names a region may read as modules
LOSS_STATE_PREFIX = "loss_"  # module-level loss state: the hook sets it, compute_loss reads it
HOOK_READS = frozenset({"iter_num", "max_iters"})  # what the loss-state hook may read

# Why some well-known names are refused: the hint in the pre-flight error.
REFUSAL_HINTS = {
    "data": "it reaches the storage of the tensors it came from",
    "grad_fn": "it walks the autograd graph to the model's parameters",
    "grad": "it reaches gradients outside the loss",
    "next_functions": "it walks the autograd graph to the model's parameters",
    "variable": "it walks the autograd graph to the model's parameters",
    "backward": "the training loop runs the backward pass, not the loss",
    "register_hook": "hooks run code outside the loss",
    "numpy": "it leaves torch (files, pickling)",
    "tofile": "it writes files",
    "dump": "it writes files",
    "format": "format strings can walk attributes; use an f-string",
    "format_map": "format strings can walk attributes; use an f-string",
    "gi_frame": "frames reach the training script",
    "f_globals": "frames reach the training script",
    "f_back": "frames reach the training script",
    "tb_frame": "frames reach the training script",
    "os": "it reaches a module",
    "sys": "it reaches a module",
    "manual_seed": "it changes the RNG state",
    "get_rng_state": "it reads the RNG state",
    "set_rng_state": "it changes the RNG state",
    "load": "it reads files",
    "save": "it writes files",
}
