"""The recurrent layers against PyTorch: outputs, final states and every gradient (input, initial states, each
parameter), for every implementation, in float64 on fixed cases and on hypothesis-drawn ones (T = 1, B = 0 and 1,
unbatched, float32 too), the errors raised for bad sizes, and two mutations that show the comparison bites."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_birnn as tg
from tinygrad_birnn import nn

torch = pytest.importorskip("torch")
pack_padded_sequence = torch.nn.utils.rnn.pack_padded_sequence
pad_packed_sequence = torch.nn.utils.rnn.pad_packed_sequence

T, B, I, H = 6, 4, 3, 4
LENGTHS = [4, 6, 1, 3]  # unsorted, one equal to T, one of 1
CELLS = [("RNN", "tanh"), ("RNN", "relu"), ("LSTM", None), ("GRU", None)]
# Each option value meets every cell type, direction and implementation at least once.
VARIANTS = [  # (num_layers, batch_first, bias, hx given, lengths)
    pytest.param(1, False, True, False, False, id="L1"),
    pytest.param(2, True, False, True, True, id="L2-batch_first-nobias-hx-lengths"),
    pytest.param(3, False, True, True, True, id="L3-hx-lengths"),
    pytest.param(1, True, True, False, True, id="L1-batch_first-lengths"),
    pytest.param(2, False, False, True, False, id="L2-nobias-hx"),
]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:  # an empty array equals an empty array of its shape
        return 0.0 if a.shape == b.shape else float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


IMPLS = ["bptt", "autograd", "bptt_batched"]


def build(mode, nonlinearity, impl="bptt", input_size=I, hidden_size=H, dtype=np.float64, **kwargs):
    """Our layer and PyTorch's, holding the same weights."""
    extra = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
    ours = getattr(nn, mode)(input_size, hidden_size, impl=impl, **extra, **kwargs).to(dtype)
    theirs = getattr(torch.nn, mode)(input_size, hidden_size, **extra, **kwargs).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def torch_forward(layer, x, hx, lengths, batch_first):
    if lengths is None:
        return layer(x, hx)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, state = layer(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    return out, state


def as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


def compare(mode, nonlinearity, impl, layers, bidirectional, batch_first, bias, given_hx, lengths, seed=0):
    """Max relative error over outputs, states and all gradients."""
    ours, theirs = build(mode, nonlinearity, impl, num_layers=layers, bidirectional=bidirectional,
                         batch_first=batch_first, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    hx = [rng.standard_normal((layers * D, B, H)) for _ in range(2 if mode == "LSTM" else 1)] if given_hx else []
    lens = LENGTHS if lengths else None

    x_t = torch.tensor(x, requires_grad=True)
    hx_t = [torch.tensor(h, requires_grad=True) for h in hx]
    out_t, state_t = torch_forward(theirs, x_t, (tuple(hx_t) if mode == "LSTM" else hx_t[0]) if hx else None, lens,
                                   batch_first)
    x_o = tg.Tensor(x, requires_grad=True)
    hx_o = [tg.Tensor(h, requires_grad=True) for h in hx]
    out_o, state_o = ours(x_o, (tuple(hx_o) if mode == "LSTM" else hx_o[0]) if hx else None, lengths=lens)

    errors = {"output": rel_err(out_o.numpy(), out_t.detach().numpy())}
    outs_t, outs_o = [out_t] + as_list(state_t), [out_o] + as_list(state_o)
    for i, (a, b) in enumerate(zip(outs_o[1:], outs_t[1:])):
        errors[f"state{i}"] = rel_err(a.numpy(), b.detach().numpy())
    cotangents = [rng.standard_normal(o.shape) for o in outs_t]
    torch.autograd.backward(outs_t, [torch.from_numpy(g) for g in cotangents])
    loss = sum((o * tg.Tensor(g)).sum() for o, g in zip(outs_o, cotangents))
    loss.backward()
    errors["grad x"] = rel_err(x_o.grad.numpy(), x_t.grad.numpy())
    for i, (a, b) in enumerate(zip(hx_o, hx_t)):
        errors[f"grad hx{i}"] = rel_err(a.grad.numpy(), b.grad.numpy())
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        errors[f"grad {name}"] = rel_err(p.grad.numpy(), theirs_params[name].grad.numpy())
    assert sum(k.startswith("grad ") and k[5:] in theirs_params for k in errors) == len(theirs_params)  # every one
    return errors


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,nonlinearity", CELLS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("layers,batch_first,bias,given_hx,lengths", VARIANTS)
def test_equal_to_pytorch(mode, nonlinearity, bidirectional, impl, layers, batch_first, bias, given_hx, lengths):
    errors = compare(mode, nonlinearity, impl, layers, bidirectional, batch_first, bias, given_hx, lengths)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-9, f"{worst}: relative error {errors[worst]:.3g}"


@pytest.mark.parametrize("mode,nonlinearity", CELLS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_cells_equal_to_pytorch(mode, nonlinearity):
    extra = {"nonlinearity": nonlinearity} if mode == "RNN" else {}
    ours = getattr(nn, mode + "Cell")(I, H, **extra).double()
    theirs = getattr(torch.nn, mode + "Cell")(I, H, **extra).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((B, I)), [rng.standard_normal((B, H)) for _ in range(2 if mode == "LSTM" else 1)]
    x_t, h_t = torch.tensor(x, requires_grad=True), [torch.tensor(a, requires_grad=True) for a in h]
    x_o, h_o = tg.Tensor(x, requires_grad=True), [tg.Tensor(a, requires_grad=True) for a in h]
    outs_t = as_list(theirs(x_t, tuple(h_t) if mode == "LSTM" else h_t[0]))
    outs_o = as_list(ours(x_o, tuple(h_o) if mode == "LSTM" else h_o[0]))
    gs = [rng.standard_normal(o.shape) for o in outs_t]
    torch.autograd.backward(outs_t, [torch.from_numpy(g) for g in gs])
    sum((o * tg.Tensor(g)).sum() for o, g in zip(outs_o, gs)).backward()
    for a, b in zip(outs_o, outs_t):
        assert rel_err(a.numpy(), b.detach().numpy()) < 1e-12
    assert rel_err(x_o.grad.numpy(), x_t.grad.numpy()) < 1e-12
    for a, b in zip(h_o, h_t):
        assert rel_err(a.grad.numpy(), b.grad.numpy()) < 1e-12
    for name, p in theirs.named_parameters():
        assert rel_err(getattr(ours, name).grad.numpy(), p.grad.numpy()) < 1e-12, name


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_state_dict_to_pytorch_and_back(mode):
    tg.manual_seed(3)
    ours = getattr(nn, mode)(I, H, num_layers=2, bidirectional=True)
    theirs = getattr(torch.nn, mode)(I, H, num_layers=2, bidirectional=True)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    back = getattr(nn, mode)(I, H, num_layers=2, bidirectional=True)
    back.load_state_dict(theirs.state_dict())  # torch tensors are accepted as they are
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    np.testing.assert_array_equal(back(tg.Tensor(x), lengths=LENGTHS)[0].numpy(),
                                  ours(tg.Tensor(x), lengths=LENGTHS)[0].numpy())
    with torch.no_grad():  # and PyTorch's own random weights load into ours and give PyTorch's outputs
        fresh = getattr(torch.nn, mode)(I, H, num_layers=2, bidirectional=True)
        expected = fresh(torch.from_numpy(x))[0].numpy()
    back.load_state_dict(fresh.state_dict())
    np.testing.assert_allclose(back(tg.Tensor(x))[0].numpy(), expected, rtol=1e-4, atol=1e-5)


# --- drawn cases: edge sizes, every option, both float types -------------------------------------------------
@st.composite
def layer_cases(draw):
    """A layer configuration and input sizes: T from 1, B from 0 (or an unbatched input), 1-2 layers, every flag."""
    mode, nonlinearity = draw(st.sampled_from(CELLS))
    case = dict(mode=mode, nonlinearity=nonlinearity, impl=draw(st.sampled_from(IMPLS)),
                T=draw(st.integers(1, 4)), B=draw(st.integers(0, 3)), I=draw(st.integers(1, 3)),
                H=draw(st.integers(1, 3)), layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                batch_first=draw(st.booleans()), bias=draw(st.booleans()), given_hx=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float64, np.float32])), seed=draw(st.integers(0, 2 ** 16)))
    case["unbatched"] = case["B"] == 1 and draw(st.booleans())
    case["lengths"] = None
    if case["B"] > 0 and not case["unbatched"] and draw(st.booleans()):
        case["lengths"] = draw(st.lists(st.integers(1, case["T"]), min_size=case["B"], max_size=case["B"]))
    return case


def run_drawn(case):
    """Errors (relative to the largest magnitude) of our outputs, states and gradients against PyTorch's."""
    c = case
    ours, theirs = build(c["mode"], c["nonlinearity"], c["impl"], c["I"], c["H"], c["dtype"],
                         num_layers=c["layers"], bidirectional=c["bidirectional"], batch_first=c["batch_first"],
                         bias=c["bias"])
    rng = np.random.default_rng(c["seed"])
    LD = c["layers"] * (2 if c["bidirectional"] else 1)
    x_shape = (c["T"], c["I"]) if c["unbatched"] else (c["B"], c["T"], c["I"]) if c["batch_first"] else \
        (c["T"], c["B"], c["I"])
    h_shape = (LD, c["H"]) if c["unbatched"] else (LD, c["B"], c["H"])
    x = rng.standard_normal(x_shape).astype(c["dtype"])
    hx = [rng.standard_normal(h_shape).astype(c["dtype"]) for _ in range(2 if c["mode"] == "LSTM" else 1)] \
        if c["given_hx"] else []
    pack = lambda hs: None if not hs else tuple(hs) if c["mode"] == "LSTM" else hs[0]  # noqa: E731
    x_t, hx_t = torch.tensor(x, requires_grad=True), [torch.tensor(h, requires_grad=True) for h in hx]
    out_t, state_t = torch_forward(theirs, x_t, pack(hx_t), c["lengths"], c["batch_first"])
    x_o, hx_o = tg.Tensor(x, requires_grad=True), [tg.Tensor(h, requires_grad=True) for h in hx]
    out_o, state_o = ours(x_o, pack(hx_o), lengths=c["lengths"])
    outs_t, outs_o = [out_t] + as_list(state_t), [out_o] + as_list(state_o)
    errors = {}
    for i, (a, b) in enumerate(zip(outs_o, outs_t)):
        assert a.shape == tuple(b.shape) and a.dtype == c["dtype"], (i, a.shape, b.shape, a.dtype)
        errors[f"value {i}"] = rel_err(a.numpy(), b.detach().numpy())
    cotangents = [rng.standard_normal(tuple(o.shape)).astype(c["dtype"]) for o in outs_t]
    torch.autograd.backward(outs_t, [torch.from_numpy(g) for g in cotangents])
    sum((o * tg.Tensor(g)).sum() for o, g in zip(outs_o, cotangents)).backward()
    pairs = [("x", x_o, x_t)] + [(f"hx{i}", a, b) for i, (a, b) in enumerate(zip(hx_o, hx_t))]
    theirs_params = dict(theirs.named_parameters())
    pairs += [(name, p, theirs_params[name]) for name, p in ours.named_parameters()]
    assert len(pairs) == 1 + len(hx) + len(theirs_params)
    for name, a, b in pairs:
        expected = np.zeros(b.shape) if b.grad is None else b.grad.numpy()
        assert a.grad is not None and a.grad.shape == expected.shape, name
        errors[f"grad {name}"] = rel_err(a.grad.numpy(), expected)
    return errors


@settings(max_examples=40, deadline=None)
@given(layer_cases())
def test_drawn_layers_equal_pytorch(case):
    errors = run_drawn(case)
    worst = max(errors, key=errors.get)
    bound = 1e-9 if case["dtype"] == np.float64 else 2e-4
    assert errors[worst] < bound, f"{worst}: relative error {errors[worst]:.3g} in {case}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode,nonlinearity", CELLS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("T,B,unbatched", [(1, 0, False), (1, 1, False), (1, 1, True), (3, 0, False), (1, 3, False)])
def test_edge_sizes_equal_pytorch(mode, nonlinearity, impl, T, B, unbatched):
    """T = 1, B = 0 (an empty output, zero gradients) and B = 1, batched and not, each for every cell."""
    case = dict(mode=mode, nonlinearity=nonlinearity, impl=impl, T=T, B=B, I=2, H=3, layers=2, bidirectional=True,
                batch_first=False, bias=True, given_hx=True, dtype=np.float64, seed=0, unbatched=unbatched,
                lengths=None)
    errors = run_drawn(case)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-9, f"{worst}: relative error {errors[worst]:.3g}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_bad_sizes_raise_where_pytorch_raises(mode, impl):
    """T = 0 raises (PyTorch: RuntimeError; here ValueError, naming the shape); so do lengths of 0, as PyTorch's
    pack_padded_sequence does. A batch of 0 sequences does not raise."""
    ours, theirs = build(mode, "tanh" if mode == "RNN" else None, impl, bidirectional=True)
    for shape in [(0, 2, I), (0, I)]:
        with pytest.raises(RuntimeError):
            theirs(torch.zeros(shape, dtype=torch.float64))
        with pytest.raises(ValueError, match=r"sequence length T >= 1; got input of shape \(0, "):
            ours(tg.Tensor(np.zeros(shape)))
    with pytest.raises(RuntimeError, match="greater than 0"):
        pack_padded_sequence(torch.zeros(3, 2, I), torch.tensor([0, 2]), enforce_sorted=False)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=3\]; got values from 0 to 2"):
        ours(tg.Tensor(np.zeros((3, 2, I))), lengths=[0, 2])
    out, _ = ours(tg.Tensor(np.zeros((3, 0, I))))
    assert out.shape == tuple(theirs(torch.zeros(3, 0, I, dtype=torch.float64))[0].shape) == (3, 0, 2 * H)


# --- mutations: the comparison must notice each of these mistakes ---------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode,first,second", [("LSTM", 0, 1), ("GRU", 0, 1)], ids=["lstm_i_f", "gru_r_z"])
def test_mutation_wrong_gate_order_is_caught(mode, first, second, impl):
    ours, theirs = build(mode, None, impl, bidirectional=True)
    swapped = {}
    for name, value in theirs.state_dict().items():  # load with two gate blocks swapped
        blocks = list(np.split(value.numpy().copy(), 4 if mode == "LSTM" else 3, axis=0))
        blocks[first], blocks[second] = blocks[second], blocks[first]
        swapped[name] = np.concatenate(blocks, axis=0)
    ours.load_state_dict(swapped)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x))[0].numpy()
    assert rel_err(ours(tg.Tensor(x))[0].numpy(), expected) > 1e-3


def naive_bidirectional(layer_fwd, layer_bwd, x, lengths):
    """The mistake: reverse the padded batch as a whole, so the backward chain starts in the padding."""
    out_f, _ = layer_fwd(tg.Tensor(x), lengths=lengths)
    out_b, _ = layer_bwd(tg.Tensor(x[::-1].copy()))
    mask = (np.arange(x.shape[0])[:, None] < np.asarray(lengths)[None, :])[:, :, None]
    return np.concatenate([out_f.numpy(), out_b.numpy()[::-1] * mask], axis=-1)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_mutation_naively_padded_reverse_direction_is_caught(mode):
    ours, theirs = build(mode, "tanh" if mode == "RNN" else None, bidirectional=True)
    state = ours.state_dict()
    fwd, bwd = getattr(nn, mode)(I, H).double(), getattr(nn, mode)(I, H).double()
    fwd.load_state_dict({k: v for k, v in state.items() if not k.endswith("_reverse")})
    bwd.load_state_dict({k[:-len("_reverse")]: v for k, v in state.items() if k.endswith("_reverse")})
    x = np.random.default_rng(0).standard_normal((T, B, I))
    with torch.no_grad():
        expected = torch_forward(theirs, torch.from_numpy(x), None, LENGTHS, False)[0].numpy()
    correct = ours(tg.Tensor(x), lengths=LENGTHS)[0].numpy()
    assert rel_err(correct, expected) < 1e-12
    naive = naive_bidirectional(fwd, bwd, x, LENGTHS)
    assert rel_err(naive[..., :H], expected[..., :H]) < 1e-12  # the forward direction is fine...
    assert rel_err(naive, expected) > 1e-3  # ...the backward one has read the padding
