"""Modules: registration order, named parameters, state dicts (with their errors, and no partial loading),
train/eval, zero_grad, dtype and backend moves, .npz round trips and the round trip through PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_birnn as tg
from tinygrad_birnn import Tensor, backend, gradcheck, nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(np.zeros(2))  # set first: listed first
        self.proj = nn.Linear(3, 2)
        self.scale = nn.Parameter([1.0, 2.0])
        self.drop = nn.Dropout(0.5)
        self.not_a_parameter = Tensor([1.0], requires_grad=True)  # a plain Tensor is not registered

    def forward(self, x):
        return self.drop(self.proj(x) * self.scale + self.gate)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(2, 4, bias=False)

    def forward(self, x):
        return self.head(self.block(x))


def snapshot(module):
    return {name: p.numpy() for name, p in module.named_parameters()}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


# --- registration -----------------------------------------------------------------------------------------------------
def test_parameters_and_modules_are_registered_in_the_order_they_are_set():
    net = Net()
    # as in PyTorch: a module's own parameters in the order set, then each submodule's, depth first
    assert [name for name, _ in net.named_parameters()] == [
        "block.gate", "block.scale", "block.proj.weight", "block.proj.bias", "head.weight"]
    assert [name for name, _ in net.named_modules()] == ["", "block", "block.proj", "block.drop", "head"]
    assert list(net.parameters()) == [p for _, p in net.named_parameters()]
    assert net.num_parameters() == 2 + 6 + 2 + 2 + 8
    assert all(isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf for p in net.parameters())


def test_reassigning_an_attribute_updates_the_registry():
    net = Net()
    net.head = None  # a module replaced by a non-module is forgotten
    assert [n for n, _ in net.named_parameters()][-1] == "block.proj.bias"
    net.block.gate = nn.Parameter(np.ones(3))  # replaced in place: keeps its position
    assert [n for n, _ in net.named_parameters()][0] == "block.gate"
    assert net.block.gate.shape == (3,)


def test_shared_modules_and_parameters_are_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(3, 3)
            self.decoder = self.encoder
            self.extra = nn.Parameter([1.0])
            self.alias = self.extra

    tied = Tied()
    assert [n for n, _ in tied.named_parameters()] == ["extra", "encoder.weight", "encoder.bias"]
    seq = nn.Sequential(tied.encoder, nn.Tanh(), tied.encoder)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    # trained once per step: the optimizer sees each tied parameter once
    seq(Tensor(np.ones((1, 3)))).sum().backward()
    before = tied.encoder.bias.numpy()
    tg.optim.SGD(seq.parameters(), lr=1.0).step()
    np.testing.assert_allclose(tied.encoder.bias.numpy(), before - tied.encoder.bias.grad.numpy(), rtol=1e-7)


def test_module_needs_super_init_and_forward():
    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter([1.0])

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) in Forgetful.__init__"):
        Forgetful()
    with pytest.raises(NotImplementedError, match="Module must define forward"):
        nn.Module()(1)


def test_parameter_dtypes_and_linear_layer(rng):
    assert nn.Parameter([1.0]).dtype == np.float32  # Python floats: float32
    assert nn.Parameter(np.ones(2)).dtype == np.float64  # a NumPy array keeps its dtype
    assert nn.Parameter([1.0], dtype=np.float64).dtype == np.float64
    assert repr(nn.Parameter([1.0])).startswith("Parameter(")
    layer = nn.Linear(3, 2)
    assert layer.weight.shape == (2, 3) and layer.bias.shape == (2,) and layer.weight.dtype == np.float32
    bound = 1 / np.sqrt(3)
    assert (np.abs(layer.weight.numpy()) <= bound).all()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).numpy(), x @ layer.weight.numpy().T + layer.bias.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"in_features=3; got shape \(4, 2\)"):
        layer(Tensor(np.ones((4, 2))))
    assert "in_features=3, out_features=2, bias=True" in repr(layer)
    assert nn.Linear(3, 2, bias=False).bias is None and len(list(nn.Linear(3, 2, bias=False).parameters())) == 1


def test_linear_gradients():
    layer = nn.Linear(3, 2).double()
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert gradcheck(lambda x, w, b: tg.functional.linear(x, w, b), [x, layer.weight, layer.bias])


def test_initial_weights_follow_the_seed():
    tg.manual_seed(3)
    a = nn.Linear(4, 4).state_dict()
    tg.manual_seed(3)
    b = nn.Linear(4, 4).state_dict()
    assert same(a, b)
    assert not np.array_equal(a["weight"], nn.Linear(4, 4).state_dict()["weight"])


def test_embedding_looks_up_rows_and_scatter_adds_gradients():
    emb = nn.Embedding(5, 3).double()
    idx = np.array([[0, 2], [2, 4]])
    out = emb(idx)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[idx])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[:, 0], [1, 0, 2, 0, 1])
    with pytest.raises(TypeError, match="Embedding expected integer indices; got dtype float64"):
        emb(np.array([0.0]))
    with pytest.raises(IndexError, match=r"must lie in \[0, 5\); got values from 0 to 5"):
        emb([0, 5])


def test_sequential_dropout_and_activations():
    tg.manual_seed(0)
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.5), nn.Tanh())
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    x = Tensor(np.ones((64, 2), dtype=np.float32))
    seq.eval()
    a, b = seq(x).numpy(), seq(x).numpy()
    assert np.array_equal(a, b)  # eval: dropout off, deterministic
    seq.train()
    c = seq(x).numpy()
    assert not np.array_equal(a, c) and (c == 0).any()
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.5)
    assert "(2): Dropout(p=0.5)" in repr(seq)


# --- modes and gradients ---------------------------------------------------------------------------------------------------
def test_train_and_eval_set_the_flag_on_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net.block.drop.training


def test_zero_grad_forgets_gradients():
    net = Net()
    net.eval()
    net(Tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_double_float_and_to_change_every_parameter():
    net = Net()
    net.block.proj.weight.grad = Tensor(np.ones((2, 3), dtype=np.float32))
    assert net.double() is net
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.block.proj.weight.grad is None  # a stale gradient of the old dtype is dropped
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    net.to("numpy")
    assert all(p.device == "numpy" for p in net.parameters())
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())


# --- state dicts ------------------------------------------------------------------------------------------------------------
def test_state_dict_holds_host_copies_in_registration_order():
    net = Net()
    state = net.state_dict()
    assert list(state) == [n for n, _ in net.named_parameters()]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["head.weight"][:] = 42.0
    assert not (net.head.weight.numpy() == 42.0).any()  # a copy, not a view


def test_load_state_dict_round_trip_and_accepted_value_types():
    source, target = Net(), Net()
    assert not same(snapshot(source), snapshot(target))
    target.load_state_dict(source.state_dict())
    assert same(snapshot(source), snapshot(target))
    as_tensors = {k: Tensor(v * 2) for k, v in source.state_dict().items()}
    target.load_state_dict(as_tensors)
    np.testing.assert_array_equal(target.head.weight.numpy(), source.head.weight.numpy() * 2)
    # a float64 entry loads into a float32 parameter as float32, and does not alias the dict's array
    state = {k: v.astype(np.float64) for k, v in source.state_dict().items()}
    target.load_state_dict(state)
    assert target.head.weight.dtype == np.float32
    state["head.weight"][:] = 0.0
    assert (target.head.weight.numpy() != 0).any()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("block.proj.bias"), r"missing keys \['block.proj.bias'\], unexpected keys \[\]"),
    (lambda s: s.__setitem__("block.extra", np.zeros(2)), r"missing keys \[\], unexpected keys \['block.extra'\]"),
    (lambda s: s.__setitem__("head.weight", np.zeros((2, 4))), r"head.weight: expected shape \(4, 2\), got \(2, 4\)"),
    (lambda s: s.__setitem__("block.scale", np.array(["a", "b"])), r"block.scale: cannot convert <U1 to float32"),
])
def test_load_state_dict_errors_load_nothing(change, message):
    net, other = Net(), Net()
    before = snapshot(net)
    state = other.state_dict()  # every other entry is valid and different: none of it may be loaded
    change(state)
    with pytest.raises(nn.StateDictError, match=f"cannot load state dict into Net: .*{message}"):
        net.load_state_dict(state)
    assert same(snapshot(net), before)


def test_load_state_dict_reports_every_problem_and_strict_false_allows_missing_or_extra():
    net = Net()
    state = net.state_dict()
    state.pop("head.weight")
    state["block.gate"] = np.zeros(5)
    message = r"missing keys \['head.weight'\].*block.gate: expected shape \(2,\), got \(5,\)"
    with pytest.raises(nn.StateDictError, match=message):
        net.load_state_dict(state)
    state["block.gate"] = np.full(2, 7.0)
    state["unused"] = np.zeros(1)
    net.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(net.block.gate.numpy(), [7.0, 7.0])
    with pytest.raises(nn.StateDictError, match="expected shape"):  # shapes are checked even when not strict
        net.load_state_dict({"block.gate": np.zeros(3)}, strict=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_and_load_npz_bit_for_bit(tmp_path, dtype):
    net = Net().to(dtype)
    path = tmp_path / "weights.npz"
    nn.save(net, str(path))
    loaded = nn.load(str(path))
    assert list(loaded) == list(net.state_dict())
    for name, value in net.state_dict().items():
        assert loaded[name].dtype == value.dtype == dtype
        assert np.array_equal(loaded[name], value)
        assert loaded[name].tobytes() == value.tobytes()
    fresh = Net().to(dtype)
    fresh.load_state_dict(loaded)
    assert same(snapshot(fresh), snapshot(net))
    nn.save(net.state_dict(), str(tmp_path / "state.npz"))  # a plain state dict saves the same way
    assert same(nn.load(str(tmp_path / "state.npz")), loaded)


def test_state_dict_through_torch_and_back(rng):
    torch = pytest.importorskip("torch")
    ours = nn.Linear(5, 3).double()
    theirs = torch.nn.Linear(5, 3).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((4, 5))
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(Tensor(x)).numpy(), expected, rtol=1e-13, atol=1e-15)
    # and back: torch's parameters (changed there) load into a fresh module of ours
    with torch.no_grad():
        theirs.weight.mul_(-2.0)
        expected = theirs(torch.from_numpy(x)).numpy()
    fresh = nn.Linear(5, 3).double()
    fresh.load_state_dict(theirs.state_dict())
    np.testing.assert_allclose(fresh(Tensor(x)).numpy(), expected, rtol=1e-13, atol=1e-15)
    assert same(fresh.state_dict(), {k: v.numpy() for k, v in theirs.state_dict().items()})


def test_state_dict_loads_onto_the_current_backend(xp_backend):
    name = backend.backend_name()
    host_state = Net().state_dict()
    net = Net()
    assert all(p.device == name for p in net.parameters())  # created on the current backend
    net.load_state_dict(host_state)
    assert all(p.device == name for p in net.parameters())
    assert same(net.state_dict(), host_state)  # state_dict() gives host arrays on any backend
    assert all(type(v) is np.ndarray for v in net.state_dict().values())
    net.eval()
    out = net(Tensor(np.ones((2, 3), dtype=np.float32)))
    out.sum().backward()
    assert out.device == name and all(p.grad.device == name for p in net.parameters())
