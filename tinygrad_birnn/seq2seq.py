"""An attention encoder–decoder (Bahdanau, Cho & Bengio 2015): training by teacher forcing, greedy and
beam-search decoding.

The encoder is a (by default bidirectional) LSTM over the embedded input; its outputs, one *annotation* per
input position, are the keys and values of an :class:`~tinygrad_birnn.nn.AdditiveAttention`. The decoder is
an LSTM cell. At output step i, with decoder state s_{i-1} and the previous output y_{i-1}:

    c_i = attention(s_{i-1}, annotations)        (the context: a weighted average of the annotations)
    s_i = LSTMCell([embed(y_{i-1}); c_i], s_{i-1})
    p(y_i | y_<i, x) = softmax(W_o [s_i; c_i] + b_o)

The first state is s_0 = tanh(W_b h + b_b), h the encoder's final states (both directions' when
bidirectional), and y_0 is the start token. Output sequences end with an end token.

A model for the decoders here provides ``encode(source, lengths) -> (memory, state)`` and
``step(tokens, state, memory) -> (logits, state, weights)``, with ``memory.select(rows)`` and the state a
tuple of (B, ...) tensors; :class:`Seq2Seq` is one.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from . import data
from .nn import LSTM, AdditiveAttention, Embedding, Linear, LSTMCell, Module, attention_mask
from .functions import concatenate, zeros
from .grad_mode import no_grad
from .tensor import Tensor


class Memory(NamedTuple):
    """What the decoder reads at every step: annotations (T, B, K), their projection U k_j (T, B, A) and the
    (B, T) boolean mask of the real positions."""

    annotations: Tensor
    projected_keys: Tensor
    mask: np.ndarray

    def select(self, rows: Any) -> "Memory":
        """The memory of the batch entries ``rows`` (repeats allowed: beam search copies each input K times)."""
        rows = np.asarray(rows)
        return Memory(self.annotations[:, rows], self.projected_keys[:, rows], self.mask[rows])


def teacher_forcing(targets: Any, lengths: Any, start_index: int, end_index: int,
                    padding_index: int = 0) -> tuple:
    """Decoder inputs and outputs for training on padded targets (U, B) with ``lengths`` (B,).

    Returns (inputs, outputs, output_lengths), each (U + 1, B) apart from the lengths: the inputs are the
    start token followed by the targets, the outputs the targets followed by the end token, so the decoder
    learns to predict token i + 1 from the true tokens up to i. Padding is ``padding_index``.
    """
    targets = np.asarray(targets)
    lengths = np.asarray(lengths)
    if targets.ndim != 2 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be a (U, B) integer array; got shape {targets.shape}, dtype {targets.dtype}")
    U, B = targets.shape
    if lengths.shape != (B,) or (B and (lengths.min() < 0 or lengths.max() > U)):
        raise ValueError(f"lengths must be {B} integers in [0, {U}]; got {lengths.tolist()}")
    real = np.arange(U)[:, None] < lengths[None, :]
    inputs = np.full((U + 1, B), padding_index, dtype=np.int64)
    inputs[0] = start_index
    inputs[1:][real] = targets[real]
    outputs = np.full((U + 1, B), padding_index, dtype=np.int64)
    outputs[:-1][real] = targets[real]
    outputs[lengths, np.arange(B)] = end_index
    return inputs, outputs, lengths + 1


class Seq2Seq(Module):
    """Embedding, LSTM encoder (bidirectional by default), additive attention, LSTM-cell decoder.

    Args:
        source_size, target_size: the input and output vocabularies (the target one holds the start and end
            tokens).
        embedding_size: the size of both embeddings.
        encoder_size: hidden units per direction of the encoder (the annotations have twice as many
            features when bidirectional).
        decoder_size: hidden units of the decoder cell; attention_size: the rows of W and U in the attention.
        start_index, end_index: the target tokens that begin and end every output sequence.
        bidirectional, num_layers: of the encoder.

    >>> model = Seq2Seq(5, 6, embedding_size=4, encoder_size=3, decoder_size=4,
    ...                 attention_size=3, start_index=1, end_index=2)
    >>> source = np.array([[3, 4], [4, 0]])  # (T, B): two words, lengths 2 and 1
    >>> logits, weights = model(source, [2, 1], np.array([[1, 1], [5, 3]]))
    >>> logits.shape, weights.shape
    ((2, 2, 6), (2, 2, 2))
    """

    def __init__(self, source_size: int, target_size: int, embedding_size: int, encoder_size: int,
                 decoder_size: int, attention_size: int, start_index: int, end_index: int,
                 bidirectional: bool = True, num_layers: int = 1):
        super().__init__()
        for name, index in (("start_index", start_index), ("end_index", end_index)):
            if not 0 <= index < target_size:
                raise ValueError(f"{name} must lie in [0, target_size={target_size}); got {index}")
        self.start_index, self.end_index = int(start_index), int(end_index)
        directions = 2 if bidirectional else 1
        annotation = directions * encoder_size
        self.source_embedding = Embedding(source_size, embedding_size)
        self.encoder = LSTM(embedding_size, encoder_size, num_layers, bidirectional=bidirectional)
        self.bridge = Linear(annotation, decoder_size)
        self.target_embedding = Embedding(target_size, embedding_size)
        self.attention = AdditiveAttention(decoder_size, annotation, attention_size)
        self.decoder = LSTMCell(embedding_size + annotation, decoder_size)
        self.output = Linear(decoder_size + annotation, target_size)

    def encode(self, source: Any, lengths: Any) -> tuple:
        """(memory, first decoder state) for ``source`` (T, B) token ids with ``lengths`` (B,)."""
        source = np.asarray(source.numpy() if isinstance(source, Tensor) else source)
        if source.ndim != 2:
            raise ValueError(f"source must be a (T, B) array of token ids; got shape {source.shape}")
        T, B = source.shape
        mask = attention_mask(lengths=np.asarray(lengths), batch=B, steps=T)
        annotations, h_n = self.encoder(self.source_embedding(source), lengths=np.asarray(lengths))
        if isinstance(h_n, tuple):
            h_n = h_n[0]
        D = self.encoder.num_directions
        last = h_n[h_n.shape[0] - D:].transpose(1, 0, 2).reshape(B, D * self.encoder.hidden_size)
        h0 = self.bridge(last).tanh()
        memory = Memory(annotations, self.attention.project_keys(annotations), mask)
        return memory, (h0, zeros(h0.shape, dtype=h0.dtype))

    def step(self, tokens: Any, state: tuple, memory: Memory) -> tuple:
        """One step from the previous tokens (B,): logits (B, V), state, weights."""
        h, c = state  # s_{i-1}
        context, weights = self.attention(h, memory.annotations, mask=memory.mask,
                                          projected_keys=memory.projected_keys)
        embedded = self.target_embedding(np.asarray(tokens))
        h, c = self.decoder(concatenate([embedded, context], axis=1), (h, c))  # s_i
        logits = self.output(concatenate([h, context], axis=1))
        return logits, (h, c), weights

    def forward(self, source: Any, lengths: Any, decoder_inputs: Any) -> tuple:
        """Teacher forcing: logits (U, B, V) and attention weights (U, B, T) for ``decoder_inputs`` (U, B)."""
        decoder_inputs = np.asarray(decoder_inputs)
        memory, state = self.encode(source, lengths)
        if decoder_inputs.ndim != 2 or decoder_inputs.shape[1] != memory.mask.shape[0]:
            raise ValueError(f"decoder_inputs must be (U, B) with B={memory.mask.shape[0]}; "
                             f"got shape {decoder_inputs.shape}")
        logits, weights = [], []
        for tokens in decoder_inputs:
            step_logits, state, step_weights = self.step(tokens, state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
        stack = lambda ts: concatenate([t.reshape((1,) + t.shape) for t in ts], axis=0)  # noqa: E731
        return stack(logits), stack(weights)

    def loss(self, source: Any, lengths: Any, targets: Any, target_lengths: Any) -> Tensor:
        """Mean cross-entropy per output token (end tokens included) under teacher forcing."""
        inputs, outputs, output_lengths = teacher_forcing(targets, target_lengths, self.start_index,
                                                          self.end_index)
        logits, _ = self(source, lengths, inputs)
        return data.sequence_cross_entropy(logits, outputs, output_lengths)


def _log_probabilities(logits: Tensor) -> np.ndarray:
    z = logits.numpy().astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def greedy_decode(model: Any, source: Any, lengths: Any, max_length: int) -> tuple:
    """The most probable token at each step, until the end token or ``max_length`` tokens.

    Returns (sequences, weights): per input, its output tokens (without the end token) and the attention
    weights of the steps that emitted them, an array (len(sequence), T) (columns past the input's length 0).
    """
    _check_max_length(max_length)
    with no_grad():
        memory, state = model.encode(source, lengths)
        B = memory.mask.shape[0]
        tokens = np.full(B, model.start_index, dtype=np.int64)
        sequences, rows = [[] for _ in range(B)], [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for _ in range(max_length):
            if done.all():
                break
            logits, state, weights = model.step(tokens, state, memory)
            tokens = logits.numpy().argmax(axis=-1)
            w = weights.numpy()
            for b in np.flatnonzero(~done):
                if tokens[b] == model.end_index:
                    done[b] = True
                else:
                    sequences[b].append(int(tokens[b]))
                    rows[b].append(w[b])
    T = memory.mask.shape[1]
    return sequences, [np.array(r).reshape(len(r), T) for r in rows]


def _check_max_length(max_length: Any) -> None:
    if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool) or max_length < 0:
        raise ValueError(f"max_length must be a non-negative integer; got {max_length!r}")


def _expand(total: np.ndarray, end: int, beam_size: int) -> tuple:
    """One input's step of beam search: (finished [(score, beam)], alive [(score, beam, token)])."""
    flat = total.ravel()
    V = total.shape[1]
    finished, alive = [], []
    for rank, index in enumerate(np.argsort(-flat, kind="stable")):
        if not np.isfinite(flat[index]) or len(alive) == beam_size:
            break
        beam, token = divmod(int(index), V)
        if token == end:
            if rank < beam_size:  # an ending is kept when it ranks among the best beam_size extensions
                finished.append((float(flat[index]), beam))
        else:
            alive.append((float(flat[index]), beam, token))
    return finished, alive


def beam_search(model: Any, source: Any, lengths: Any, beam_size: int, max_length: int) -> tuple:
    """The output sequence of highest log-probability found by a beam of ``beam_size`` hypotheses.

    Each step extends every hypothesis by every token and keeps the ``beam_size`` best extensions; one that
    ends (end token) among them is set aside as finished. An input is done once its best finished score is at
    least its best live score (a longer sequence only loses probability), or after ``max_length`` tokens
    (live hypotheses then count as finished). Scores are sums of log-probabilities, not length-normalised;
    ``beam_size=1`` is greedy decoding, and a beam wide enough to keep every prefix is exact search.
    Returns (sequences, scores), one best sequence (without the end token) and its score per input.
    """
    if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer; got {beam_size!r}")
    _check_max_length(max_length)
    K = int(beam_size)
    with no_grad():
        memory, state = model.encode(source, lengths)
        B = memory.mask.shape[0]
        origin = np.repeat(np.arange(B), K)
        memory, state = memory.select(origin), tuple(s[origin] for s in state)
        tokens = np.full(B * K, model.start_index, dtype=np.int64)
        scores = np.full((B, K), -np.inf)
        scores[:, 0] = 0.0
        histories = [[[] for _ in range(K)] for _ in range(B)]
        finished = [[] for _ in range(B)]
        for _ in range(max_length):
            if not np.isfinite(scores).any():
                break
            logits, state, _ = model.step(tokens, state, memory)
            total = scores[:, :, None] + _log_probabilities(logits).reshape(B, K, -1)
            rows = np.repeat(np.arange(B) * K, K)  # parent rows; unused slots copy the first beam
            for b in range(B):
                if not np.isfinite(scores[b]).any():
                    continue
                ended, alive = _expand(total[b], model.end_index, K)
                finished[b] += [(score, histories[b][beam]) for score, beam in ended]
                best = max((score for score, _ in finished[b]), default=-np.inf)
                if not alive or best >= alive[0][0]:
                    scores[b] = -np.inf
                    continue
                scores[b] = -np.inf
                new_histories = [[] for _ in range(K)]
                for k, (score, beam, token) in enumerate(alive):
                    scores[b, k], tokens[b * K + k], rows[b * K + k] = score, token, b * K + beam
                    new_histories[k] = histories[b][beam] + [token]
                histories[b] = new_histories
            state = tuple(s[rows] for s in state)
        for b in range(B):  # hypotheses still alive after max_length tokens count as finished
            finished[b] += [(scores[b, k], histories[b][k]) for k in range(K) if np.isfinite(scores[b, k])]
    best = [max(f, key=lambda item: item[0]) for f in finished]
    return [list(seq) for _, seq in best], np.array([score for score, _ in best])


def sequence_log_probability(model: Any, source: Any, lengths: Any, sequences: Sequence[Sequence[int]],
                             ended: bool = True) -> np.ndarray:
    """log p(sequence | source) under ``model`` for each input: the sum of its tokens' log-probabilities,
    plus the end token's when ``ended``."""
    with no_grad():
        memory, state = model.encode(source, lengths)
        B = memory.mask.shape[0]
        steps = max(len(s) for s in sequences) + 1
        totals = np.zeros(B)
        tokens = np.full(B, model.start_index, dtype=np.int64)
        for i in range(steps):
            logits, state, _ = model.step(tokens, state, memory)
            logp = _log_probabilities(logits)
            for b, seq in enumerate(sequences):
                if i < len(seq):
                    totals[b] += logp[b, seq[i]]
                elif i == len(seq) and ended:
                    totals[b] += logp[b, model.end_index]
            tokens = np.array([seq[i] if i < len(seq) else model.end_index for seq in sequences], dtype=np.int64)
    return totals
