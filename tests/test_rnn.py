"""The recurrent layers without PyTorch: names, initialisation, the two implementations against each other,
gradient checks of the fused primitives, variable-length semantics, cells, dropout and bad input."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import nn, rnn
from tinygrad_birnn.nn import StateDictError

MODES = [("RNN", "tanh"), ("RNN", "relu"), ("LSTM", None), ("GRU", None)]


def make(mode, nonlinearity, *args, **kwargs):
    if mode == "RNN":
        return nn.RNN(*args, nonlinearity=nonlinearity, **kwargs)
    return getattr(nn, mode)(*args, **kwargs)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def flat_states(state):
    return list(state) if isinstance(state, tuple) else [state]


def run_with_grads(layer, x, hx, lengths, seed=1):
    """Forward, then backward of a random contraction of all outputs; returns (outputs, grads by name)."""
    rng = np.random.default_rng(seed)
    xt = tg.Tensor(x, requires_grad=True)
    hxt = None if hx is None else tuple(tg.Tensor(h, requires_grad=True) for h in hx)
    out, state = layer(xt, None if hxt is None else (hxt if len(hxt) == 2 else hxt[0]), lengths=lengths)
    outs = [out] + flat_states(state)
    loss = sum(((o * tg.Tensor(rng.standard_normal(o.shape))).sum() for o in outs), tg.Tensor(np.zeros(())))
    layer.zero_grad()
    loss.backward()
    grads = {"x": xt.grad.numpy()}
    for i, h in enumerate(hxt or ()):
        grads[f"hx{i}"] = h.grad.numpy()
    grads.update({n: p.grad.numpy() for n, p in layer.named_parameters()})
    return [o.numpy() for o in outs], grads


# --- parameters ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,gates", [("RNN", 1), ("LSTM", 4), ("GRU", 3)])
def test_parameter_names_shapes_and_order_follow_pytorch(mode, gates):
    layer = make(mode, "tanh", 3, 5, num_layers=2, bidirectional=True)
    expected = []
    for k, inp in ((0, 3), (1, 10)):
        for sfx in ("", "_reverse"):
            expected += [(f"weight_ih_l{k}{sfx}", (gates * 5, inp)), (f"weight_hh_l{k}{sfx}", (gates * 5, 5)),
                         (f"bias_ih_l{k}{sfx}", (gates * 5,)), (f"bias_hh_l{k}{sfx}", (gates * 5,))]
    assert [(n, v.shape) for n, v in layer.state_dict().items()] == expected
    no_bias = make(mode, "tanh", 3, 5, bias=False)
    assert list(no_bias.state_dict()) == ["weight_ih_l0", "weight_hh_l0"]
    assert len(layer.all_weights) == 4 and len(layer.all_weights[0]) == 4


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_initialisation_is_uniform_from_the_host_generator(mode):
    tg.manual_seed(7)
    layer = make(mode, "tanh", 4, 9, num_layers=2, bidirectional=True)
    tg.manual_seed(7)
    rng = tg.backend.host_rng()
    for name, value in layer.state_dict().items():  # drawn in registration (PyTorch's) order
        expected = rng.uniform(-1 / 3, 1 / 3, size=value.shape).astype(np.float32)
        np.testing.assert_array_equal(value, expected, err_msg=name)
        assert value.dtype == np.float32 and np.abs(value).max() <= 1 / 3
    tg.manual_seed(7)
    again = make(mode, "tanh", 4, 9, num_layers=2, bidirectional=True)
    for (n, a), b in zip(layer.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=n)


# --- the two implementations agree ---------------------------------------------------------------------------
AGREE_CASES = [  # (num_layers, bidirectional, batch_first, bias, hx given, lengths)
    (1, False, False, True, False, None),
    (1, True, False, True, True, [2, 5, 1, 4]),
    (2, True, True, False, True, [5, 3, 3, 1]),
    (3, False, False, True, True, [1, 2, 5, 4]),
    (2, True, False, True, False, None),
]


@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("layers,bidirectional,batch_first,bias,given_hx,lengths", AGREE_CASES)
def test_fused_and_step_by_step_agree_in_float64(mode, nonlinearity, layers, bidirectional, batch_first, bias,
                                                  given_hx, lengths):
    T, B, I, H = 5, 4, 3, 4
    tg.manual_seed(0)
    layer = make(mode, nonlinearity, I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                 bias=bias).double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    D = 2 if bidirectional else 1
    hx = None
    if given_hx:
        hx = [rng.standard_normal((layers * D, B, H)) for _ in range(2 if mode == "LSTM" else 1)]
    results = {}
    for impl in ("fused", "steps"):
        layer.impl = impl
        results[impl] = run_with_grads(layer, x, hx, lengths)
    (out_f, g_f), (out_s, g_s) = results["fused"], results["steps"]
    for a, b in zip(out_f, out_s):
        assert rel_err(a, b) < 1e-10
    assert g_f.keys() == g_s.keys()
    for name in g_f:
        assert rel_err(g_f[name], g_s[name]) < 1e-10, name


# --- gradient checks: every primitive this module registers --------------------------------------------------
def layer_function(mode, impl, D, bias, mask, nonlinearity="tanh"):
    """f(x, h0[, c0], *weights) -> all outputs flattened into one vector, for gradcheck."""
    layer_fn = rnn.IMPLEMENTATIONS[impl]
    per_dir = 4 if bias else 2

    def f(x, *rest):
        n_states = 2 if mode == "LSTM" else 1
        states, weights = rest[:n_states], rest[n_states:]
        groups = [weights[d * per_dir:(d + 1) * per_dir] for d in range(D)]
        hx = tuple(states) if mode == "LSTM" else states[0]
        out, state = layer_fn(mode, x, hx, groups, mask, nonlinearity)
        return tg.concatenate([t.reshape(-1) for t in [out] + flat_states(state)])

    return f


def gradcheck_inputs(mode, D, bias, T=3, B=2, I=2, H=2, seed=0):
    rng = np.random.default_rng(seed)
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[mode]
    inputs = [rng.standard_normal((T, B, I))]
    inputs += [rng.standard_normal((D, B, H)) * 0.5 for _ in range(2 if mode == "LSTM" else 1)]
    for _ in range(D):
        inputs += [rng.uniform(-0.7, 0.7, (G * H, I)), rng.uniform(-0.7, 0.7, (G * H, H))]
        if bias:
            inputs += [rng.uniform(-0.7, 0.7, G * H), rng.uniform(-0.7, 0.7, G * H)]
    return inputs


def _gradcheck_layer(mode, impl, D, bias, lengths, nonlinearity="tanh"):
    inputs = gradcheck_inputs(mode, D, bias)
    mask = None if lengths is None else rnn.lengths_mask(np.array(lengths), 3, tg.get_backend())
    assert tg.gradcheck(layer_function(mode, impl, D, bias, mask, nonlinearity), inputs, atol=1e-7, rtol=1e-6)


GRAD_CASES = [(1, True, None), (2, True, None), (2, False, [3, 1]), (2, True, [1, 2])]


@pytest.mark.primitive("rnn_layer")
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("D,bias,lengths", GRAD_CASES)
def test_gradcheck_rnn_layer(D, bias, lengths, nonlinearity):
    _gradcheck_layer("RNN", "fused", D, bias, lengths, nonlinearity)


@pytest.mark.primitive("lstm_layer")
@pytest.mark.parametrize("D,bias,lengths", GRAD_CASES)
def test_gradcheck_lstm_layer(D, bias, lengths):
    _gradcheck_layer("LSTM", "fused", D, bias, lengths)


@pytest.mark.primitive("gru_layer")
@pytest.mark.parametrize("D,bias,lengths", GRAD_CASES)
def test_gradcheck_gru_layer(D, bias, lengths):
    _gradcheck_layer("GRU", "fused", D, bias, lengths)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_gradcheck_step_by_step(mode):
    _gradcheck_layer(mode, "steps", 2, True, [2, 3])


@pytest.mark.primitive("unstack")
def test_unstack_gives_slices_and_stacks_gradients_back():
    x = tg.Tensor(np.arange(12.0).reshape(3, 2, 2), requires_grad=True)
    parts = tg.unstack(x)
    assert len(parts) == 3 and all(p.shape == (2, 2) for p in parts)
    np.testing.assert_array_equal(parts[1].numpy(), x.numpy()[1])
    (parts[0] * 2 + parts[2] * 3).sum().backward()  # parts[1] unused: its gradient is zero
    expected = np.zeros((3, 2, 2))
    expected[0], expected[2] = 2, 3
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    one = tg.unstack(tg.Tensor(np.ones((1, 3))))
    assert isinstance(one, tuple) and one[0].shape == (3,)
    assert tg.gradcheck(lambda a: tg.stack([p * (i + 1) for i, p in enumerate(tg.unstack(a))]).tanh(),
                        [np.random.default_rng(0).standard_normal((4, 3))])


# --- variable lengths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,nonlinearity", MODES)
@pytest.mark.parametrize("impl", ["fused", "steps"])
def test_lengths_equal_running_each_sequence_alone(mode, nonlinearity, impl):
    T, B, I, H, lengths = 6, 4, 3, 5, [4, 6, 1, 3]
    tg.manual_seed(1)
    layer = make(mode, nonlinearity, I, H, num_layers=2, bidirectional=True, impl=impl).double()
    x = np.random.default_rng(2).standard_normal((T, B, I))
    x_padded = x.copy()
    for b, n in enumerate(lengths):
        x_padded[n:, b] = 1e3  # garbage in the padding must not leak anywhere
    out, state = layer(tg.Tensor(x_padded), lengths=np.array(lengths))
    out = out.numpy()
    states = [s.numpy() for s in flat_states(state)]
    for b, n in enumerate(lengths):
        alone_out, alone_state = layer(tg.Tensor(x[:n, b:b + 1]))
        np.testing.assert_allclose(out[:n, b], alone_out.numpy()[:, 0], rtol=1e-12, atol=1e-12)
        assert np.all(out[n:, b] == 0)
        for s, a in zip(states, flat_states(alone_state)):
            np.testing.assert_allclose(s[:, b], a.numpy()[:, 0], rtol=1e-12, atol=1e-12)


def test_lengths_accept_list_array_and_tensor_in_any_order():
    tg.manual_seed(0)
    layer = nn.GRU(2, 3, bidirectional=True)
    x = tg.Tensor(np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32))
    ref = layer(x, lengths=[2, 4, 1])[0].numpy()
    for lengths in (np.array([2, 4, 1]), tg.Tensor(np.array([2, 4, 1])), (2, 4, 1), np.array([2.0, 4.0, 1.0])):
        np.testing.assert_array_equal(layer(x, lengths=lengths)[0].numpy(), ref)
    full = layer(x, lengths=[4, 4, 4])[0].numpy()
    np.testing.assert_allclose(full, layer(x)[0].numpy(), rtol=1e-6, atol=1e-7)


# --- layout, dtype, modes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["fused", "steps"])
def test_batch_first_is_the_transposed_layout(impl):
    tg.manual_seed(0)
    a = nn.LSTM(3, 4, num_layers=2, bidirectional=True, impl=impl).double()
    b = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, impl=impl).double()
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out_a, (h_a, c_a) = a(tg.Tensor(x), lengths=[5, 2])
    out_b, (h_b, c_b) = b(tg.Tensor(x.transpose(1, 0, 2)), lengths=[5, 2])
    assert out_a.shape == (5, 2, 8) and out_b.shape == (2, 5, 8) and h_b.shape == (4, 2, 4)
    np.testing.assert_allclose(out_b.numpy(), out_a.numpy().transpose(1, 0, 2), rtol=1e-12)
    np.testing.assert_allclose(h_b.numpy(), h_a.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_b.numpy(), c_a.numpy(), rtol=1e-12)


@pytest.mark.parametrize("mode,nonlinearity", MODES)
def test_float32_by_default_and_gradients_keep_the_dtype(mode, nonlinearity):
    layer = make(mode, nonlinearity, 3, 4, bidirectional=True)
    x = tg.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32), requires_grad=True)
    out, state = layer(x, lengths=[5, 3])
    assert out.dtype == np.float32 and all(s.dtype == np.float32 for s in flat_states(state))
    out.sum().backward()
    assert x.grad.dtype == np.float32 and all(p.grad.dtype == np.float32 for p in layer.parameters())


@pytest.mark.parametrize("mode,nonlinearity", MODES)
def test_unbatched_input_is_a_batch_of_one(mode, nonlinearity):
    tg.manual_seed(0)
    layer = make(mode, nonlinearity, 3, 4, num_layers=2, bidirectional=True).double()
    x = np.random.default_rng(0).standard_normal((5, 3))
    out, state = layer(tg.Tensor(x))
    out_b, state_b = layer(tg.Tensor(x[:, None]))
    assert out.shape == (5, 8)
    np.testing.assert_allclose(out.numpy(), out_b.numpy()[:, 0], rtol=1e-12)
    for s, sb in zip(flat_states(state), flat_states(state_b)):
        assert s.shape == (4, 4)
        np.testing.assert_allclose(s.numpy(), sb.numpy()[:, 0], rtol=1e-12)
    hx = tuple(s for s in flat_states(state))
    layer(tg.Tensor(x), hx if mode == "LSTM" else hx[0])  # an unbatched state is accepted too


@pytest.mark.parametrize("impl", ["fused", "steps"])
def test_dropout_between_layers_in_training_only(impl):
    tg.manual_seed(0)
    layer = nn.GRU(3, 4, num_layers=2, dropout=0.5, impl=impl).double()
    x = tg.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)))
    layer.eval()
    a, b = layer(x)[0].numpy(), layer(x)[0].numpy()
    np.testing.assert_array_equal(a, b)
    layer.train()
    tg.manual_seed(3)
    c = layer(x)[0].numpy()
    tg.manual_seed(3)
    np.testing.assert_array_equal(layer(x)[0].numpy(), c)  # reproducible under a seed
    assert np.abs(c - a).max() > 1e-3
    single = nn.GRU(3, 4, num_layers=1, dropout=0.5, impl=impl).double()
    np.testing.assert_array_equal(single(x)[0].numpy(), single.eval()(x)[0].numpy())


def test_dropout_draws_are_the_same_for_both_implementations():
    tg.manual_seed(0)
    layer = nn.RNN(3, 4, num_layers=3, dropout=0.3, bidirectional=True).double()
    x = tg.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)))
    outs = []
    for impl in ("fused", "steps"):
        layer.impl = impl
        tg.manual_seed(11)
        outs.append(layer(x)[0].numpy())
    assert rel_err(outs[0], outs[1]) < 1e-12


@pytest.mark.parametrize("mode,nonlinearity", MODES)
def test_backward_twice_with_retain_graph_doubles_the_gradients(mode, nonlinearity):
    """The fused VJPs must leave their saved arrays untouched, so a second backward gives the same again."""
    tg.manual_seed(0)
    layer = make(mode, nonlinearity, 3, 4, bidirectional=True).double()
    x = tg.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)), requires_grad=True)
    out, state = layer(x, lengths=[5, 3])
    loss = (out * out).sum() + sum((s * s).sum() for s in flat_states(state))
    loss.backward(retain_graph=True)
    first = {n: p.grad.numpy().copy() for n, p in layer.named_parameters()}
    first["x"] = x.grad.numpy().copy()
    loss.backward()
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), 2 * first[n], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(x.grad.numpy(), 2 * first["x"], rtol=1e-12, atol=1e-15)


def test_auto_picks_fused_on_the_cpu():
    layer = nn.LSTM(3, 4, bidirectional=True)
    assert layer.impl == "auto" and "impl=" not in repr(layer)
    out, _ = layer(tg.Tensor(np.ones((2, 1, 3), dtype=np.float32), requires_grad=True))
    assert out._node.prim.name == "lstm_layer"  # the fused layer's primitive (batched: *_batched)


def test_no_grad_records_nothing():
    layer = nn.LSTM(3, 4, bidirectional=True)
    x = tg.Tensor(np.ones((2, 1, 3), dtype=np.float32), requires_grad=True)
    with tg.no_grad():
        out, (h, c) = layer(x)
    assert not out.requires_grad and out.is_leaf
    assert "impl='steps'" in repr(nn.LSTM(3, 4, impl="steps"))
    assert "bidirectional=True" in repr(layer)


def test_state_dict_round_trip_through_npz(tmp_path):
    tg.manual_seed(0)
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    nn.save(layer, tmp_path / "lstm.npz")
    tg.manual_seed(1)
    other = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    other.load_state_dict(nn.load(tmp_path / "lstm.npz"))
    x = tg.Tensor(np.ones((3, 2, 3), dtype=np.float32))
    np.testing.assert_array_equal(layer(x)[0].numpy(), other(x)[0].numpy())


# --- cells ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,nonlinearity", MODES)
def test_cells_take_one_step_of_the_layer(mode, nonlinearity):
    tg.manual_seed(0)
    cell = (nn.RNNCell(3, 4, nonlinearity=nonlinearity) if mode == "RNN" else getattr(nn, mode + "Cell")(3, 4)).double()
    layer = make(mode, nonlinearity, 3, 4).double()
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    hx = (tg.Tensor(h), tg.Tensor(h * 0.5)) if mode == "LSTM" else tg.Tensor(h)
    step = cell(tg.Tensor(x), hx)
    layer_hx = tuple(s.reshape(1, 2, 4) for s in hx) if mode == "LSTM" else hx.reshape(1, 2, 4)
    _, state = layer(tg.Tensor(x[None]), layer_hx)
    for a, b in zip(flat_states(step), flat_states(state)):
        np.testing.assert_allclose(a.numpy(), b.numpy()[0], rtol=1e-12)
    unbatched = cell(tg.Tensor(x[0]))  # (input_size,) with a zero state
    assert flat_states(unbatched)[0].shape == (4,)
    assert "bias=False" in repr(nn.GRUCell(3, 4, bias=False))


def test_cell_errors():
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\)"):
        nn.RNNCell(3, 4)(tg.Tensor(np.ones((2, 5))))
    with pytest.raises(ValueError, match=r"hidden state has shape \(2, 5\), expected \(2, 4\)"):
        nn.GRUCell(3, 4)(tg.Tensor(np.ones((2, 3))), tg.Tensor(np.ones((2, 5))))
    with pytest.raises(TypeError, match="tuple"):
        nn.LSTMCell(3, 4)(tg.Tensor(np.ones((2, 3))), tg.Tensor(np.ones((2, 4))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(3, 4, nonlinearity="sigmoid")


# --- bad input ------------------------------------------------------------------------------------------------
def test_forward_errors_name_expected_and_given():
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = tg.Tensor(np.ones((5, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"rank 3 .*got shape \(5, 2, 3, 1\)"):
        layer(tg.Tensor(np.ones((5, 2, 3, 1))))
    with pytest.raises(ValueError, match=r"input_size=3 .*got shape \(5, 2, 7\)"):
        layer(tg.Tensor(np.ones((5, 2, 7))))
    with pytest.raises(ValueError, match="lengths has 3 entries, expected 2"):
        layer(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\]; got values from 2 to 6"):
        layer(x, lengths=[6, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\]; got values from 0"):
        layer(x, lengths=[0, 2])
    with pytest.raises(TypeError, match="lengths must be integers"):
        layer(x, lengths=[1.5, 2])
    with pytest.raises(ValueError, match="1-D"):
        layer(x, lengths=[[1, 2]])
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        layer(x, tg.Tensor(np.zeros((4, 2, 4))))
    with pytest.raises(ValueError, match=r"c_0 has shape \(4, 2, 5\), expected \(4, 2, 4\)"):
        layer(x, (tg.Tensor(np.zeros((4, 2, 4))), tg.Tensor(np.zeros((4, 2, 5)))))
    with pytest.raises(ValueError, match=r"hx has shape \(2, 2, 4\), expected \(4, 2, 4\)"):
        nn.GRU(3, 4, num_layers=2, bidirectional=True)(x, tg.Tensor(np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match="lengths need a batch"):
        layer(tg.Tensor(np.ones((5, 3))), lengths=[5])


def test_constructor_errors():
    with pytest.raises(ValueError, match="impl must be one of"):
        nn.RNN(3, 4, impl="cudnn")
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)"):
        nn.GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        nn.LSTM(3, 0)
    layer = nn.RNN(3, 4)
    with pytest.raises(ValueError, match="impl must be one of"):
        layer.impl = "nope"


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_state_dict_errors_for_recurrent_layers(mode):
    layer = make(mode, "tanh", 3, 4, bidirectional=True)
    state = layer.state_dict()
    missing = {k: v for k, v in state.items() if k != "bias_hh_l0_reverse"}
    with pytest.raises(StateDictError, match=r"missing keys \['bias_hh_l0_reverse'\]"):
        layer.load_state_dict(missing)
    with pytest.raises(StateDictError, match=r"unexpected keys \['weight_ih_l1'\]"):
        layer.load_state_dict({**state, "weight_ih_l1": state["weight_ih_l0"]})
    bad = dict(state)
    bad["weight_hh_l0"] = np.zeros((2, 2), dtype=np.float32)
    rows = state["weight_hh_l0"].shape[0]
    with pytest.raises(StateDictError, match=rf"weight_hh_l0: expected shape \({rows}, 4\), got \(2, 2\)"):
        layer.load_state_dict(bad)
    before = layer.state_dict()
    for k in before:  # nothing changed by the failed loads
        np.testing.assert_array_equal(before[k], state[k])


# --- every backend (the cupy case runs where a GPU is usable, and skips elsewhere) ------------------------------
@pytest.mark.parametrize("impl", ["fused", "steps"])
@pytest.mark.parametrize("mode,nonlinearity", MODES)
def test_same_results_on_every_backend(xp_backend, mode, nonlinearity, impl):
    name = tg.backend.backend_name(xp_backend)
    tg.set_backend("numpy")
    tg.manual_seed(0)
    layer = make(mode, nonlinearity, 3, 4, num_layers=2, bidirectional=True, impl=impl).double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 3))
    hx = [rng.standard_normal((4, 4, 4)) for _ in range(2 if mode == "LSTM" else 1)]
    lengths = [2, 5, 1, 4]
    ref_out, ref_grads = run_with_grads(layer, x, hx, lengths)
    tg.set_backend(name)
    layer.to(name)
    assert all(p.device == name for p in layer.parameters())
    out, grads = run_with_grads(layer, x, hx, lengths)
    for a, b in zip(out, ref_out):
        assert rel_err(a, b) < 1e-10
    for key in ref_grads:
        assert rel_err(grads[key], ref_grads[key]) < 1e-10, key
    f32 = make(mode, nonlinearity, 3, 4, bidirectional=True, impl=impl)  # float32 on this backend
    out32, _ = f32(tg.Tensor(x.astype(np.float32)), lengths=lengths)
    assert out32.dtype == np.float32 and out32.device == name


# --- the house: examples that run, imports that flow one way -------------------------------------------------
def test_docstring_examples_run():
    import doctest

    from tinygrad_birnn.nn import recurrent
    globs = {"nn": nn, "Tensor": tg.Tensor, "np": np}
    failures, tried = doctest.testmod(recurrent, globs=globs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 18 and failures == 0
    for cls in (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell):
        doc = cls.__doc__
        assert "Args:" in doc and "Inputs:" in doc and "Outputs:" in doc and "Example:" in doc, cls.__name__


def test_the_recurrent_package_imports_downwards_and_no_private_names():
    """tinygrad_birnn/rnn/ never imports the modules (nn), data or optim; no module takes another's private names."""
    import ast
    from pathlib import Path

    root = Path(tg.__file__).parent
    files = sorted((root / "rnn").glob("*.py")) + [root / "nn" / "recurrent.py", root / "data.py", root / "fast_rnn.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
                assert not [n for n in names if n.startswith("_")], (path.name, node.module, names)
                if path.parent.name == "rnn":
                    module = (node.module or "").split(".")[0]
                    assert module not in ("nn", "data", "optim", "cuda_graph"), (path.name, node.module)


def test_former_names_still_work():
    """The implementations' and helpers' former names, kept for one release, are the new ones."""
    assert rnn.IMPLEMENTATIONS["fused"] is rnn.bptt_layer and rnn.IMPLEMENTATIONS["steps"] is rnn.autograd_layer
    assert rnn.IMPLEMENTATIONS["batched"] is rnn.batched_layer and rnn.fused_layer is rnn.bptt_layer
    assert rnn.steps_layer is rnn.autograd_layer and rnn.GATES == {"RNN": 1, "LSTM": 4, "GRU": 3}
    assert tg.fast_rnn.batched_layer is rnn.batched_layer and tg.fast_rnn.KERNEL_SOURCES is rnn.KERNEL_SOURCES
    x = tg.Tensor(np.random.default_rng(0).standard_normal((4, 2, 3)))
    outs = {}
    for impl in ("fused", "bptt", "steps", "autograd", "batched", "bptt_batched"):
        tg.manual_seed(0)
        layer = nn.GRU(3, 5, bidirectional=True, impl=impl).double()
        assert layer.impl == impl and f"impl={impl!r}" in repr(layer)
        outs[impl] = layer(x, lengths=[4, 2])[0].numpy()
    for impl, out in outs.items():
        np.testing.assert_allclose(out, outs["bptt"], rtol=1e-12, atol=1e-14, err_msg=impl)
    assert rnn.step_order(3, 0) == [0, 1, 2] and rnn.step_order(3, 1) == [2, 1, 0]
