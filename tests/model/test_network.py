import pytest
import torch

from model.models.config import ModelConfig
from model.models.network import RNNLM
from model.text.batching import pad_batch, with_boundaries
from model.text.tokenizer import Tokenizer

from ..conftest import TINY_LINES


def tiny_batch():
    tok = Tokenizer.build(TINY_LINES, kind="char")
    return tok, pad_batch([with_boundaries(tok.encode(s).ids) for s in TINY_LINES])


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_each_cell_learns_the_tiny_corpus(cell, num_layers):
    torch.manual_seed(0)
    tok, batch = tiny_batch()
    net = RNNLM(
        ModelConfig(
            vocab_size=len(tok), cell=cell, emb_dim=24, hidden_dim=24, num_layers=num_layers, dropout=0.1
        )
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        _, _, loss = net(batch[:, :-1], None, batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.6  # nats: clearly learning, not noise


def test_rnn_tanh_is_the_classic_formula():
    torch.manual_seed(0)
    net = RNNLM(
        ModelConfig(
            vocab_size=10,
            cell="rnn_tanh",
            emb_dim=4,
            hidden_dim=5,
            num_layers=1,
            dropout=0.0,
            tie_weights=False,
        )
    ).eval()
    ids = torch.tensor([[2, 5, 7]])
    _, state, _ = net(ids)
    r = net.rnn
    h = torch.zeros(5)
    for t in range(3):
        x = net.embedding.weight[ids[0, t]]
        h = torch.tanh(r.weight_ih_l0 @ x + r.bias_ih_l0 + r.weight_hh_l0 @ h + r.bias_hh_l0)
    assert torch.allclose(state[0, 0], h, atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_carried_state_equals_whole_sequence(cell):
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=30, cell=cell, emb_dim=8, hidden_dim=8, num_layers=2)).eval()
    ids = torch.randint(4, 30, (3, 9))
    whole, _, _ = net(ids)
    first, state, _ = net(ids[:, :4])
    second, _, _ = net(ids[:, 4:], state)
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5)
    assert state.shape == (2, 3, 16 if cell == "lstm" else 8)


def test_tied_weights_share_storage_and_projection_when_widths_differ():
    tied = RNNLM(ModelConfig(vocab_size=20, emb_dim=8, hidden_dim=8))
    assert tied.decoder.weight.data_ptr() == tied.embedding.weight.data_ptr()
    projected = RNNLM(ModelConfig(vocab_size=20, emb_dim=6, hidden_dim=10))
    assert projected.proj is not None
    logits, _, _ = projected(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 20)


def test_gradient_clipping_bounds_the_norm():
    torch.manual_seed(0)
    tok, batch = tiny_batch()
    net = RNNLM(ModelConfig(vocab_size=len(tok), emb_dim=16, hidden_dim=16))
    _, _, loss = net(batch[:, :-1], None, batch[:, 1:])
    (loss * 1000).backward()
    before = torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    assert before > 0.5
    assert after <= 0.5 + 1e-4


def test_pad_targets_are_ignored():
    torch.manual_seed(0)
    net = RNNLM(ModelConfig(vocab_size=12, emb_dim=8, hidden_dim=8)).eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    padded = torch.tensor([[2, 5, 6, 3, 0, 0]])
    _, _, loss = net(ids[:, :-1], None, ids[:, 1:])
    _, _, loss_padded = net(padded[:, :-1], None, padded[:, 1:])
    assert torch.allclose(loss, loss_padded, atol=1e-6)


def test_flops_per_token_counts_shapes():
    net = RNNLM(ModelConfig(vocab_size=100, cell="lstm", emb_dim=16, hidden_dim=16, num_layers=2))
    assert net.flops_per_token() == 2 * (2 * 4 * 16 * 32) + 2 * 16 * 100
