"""Rank-side runners on 2 gloo processes (torch.multiprocessing, no Spark) against hand-rolled code.

One spawn runs several jobs in the same process group, because starting processes that import
torch is the expensive part on this 2-core machine.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
import traceback
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from training.collab_averaging import run_fedavg, run_local_sgd
from training.collab_common import client_shuffle_seed, make_model, peer_seed
from training.collab_dml import run_dml
from training.config import CollabConfig, TrainConfig
from training.data import ShardData, iter_batches
from training.fusion import FusionError

WORLD = 2


def _digits() -> tuple[ShardData, ShardData]:
    """sklearn digits, scaled to [0, 1]; a fixed 1,400 / 397 train / test cut."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(123))
    x, y = x[order], y[order]

    def part(sl: slice) -> ShardData:
        return ShardData(x[sl].contiguous(), y[sl].contiguous(), order[sl].clone(), 10, (8, 8))

    return part(slice(0, 1400)), part(slice(1400, None))


def _subset(data: ShardData, index: torch.Tensor) -> ShardData:
    return ShardData(
        data.features[index], data.labels[index], data.ids[index], data.num_classes, data.feature_shape
    )


def iid_clients(data: ShardData, sizes: list[int], seed: int) -> list[ShardData]:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for n in sizes:
        out.append(_subset(data, order[start : start + n]))
        start += n
    return out


def class_clients(data: ShardData, classes_per_client: list[list[int]]) -> list[ShardData]:
    """Pathological non-IID: client k holds only the listed classes (a class may be split)."""
    owners: dict[int, list[int]] = {}
    for k, classes in enumerate(classes_per_client):
        for c in classes:
            owners.setdefault(c, []).append(k)
    buckets: list[list[int]] = [[] for _ in classes_per_client]
    seen: dict[int, int] = {}
    for i, label in enumerate(data.labels.tolist()):
        ks = owners[label]
        buckets[ks[seen.get(label, 0) % len(ks)]].append(i)
        seen[label] = seen.get(label, 0) + 1
    return [_subset(data, torch.tensor(b)) for b in buckets]


def config(mode: str, **collab: Any) -> TrainConfig:
    cfg = TrainConfig(collab=CollabConfig(mode=mode))
    cfg.collab = dataclasses.replace(cfg.collab, **collab)
    cfg.model = dataclasses.replace(cfg.model, name="mlp784")
    cfg.optim = dataclasses.replace(cfg.optim, lr=0.05, momentum=0.9, nesterov=True, decay=0.0)
    cfg.train = dataclasses.replace(cfg.train, batch_size=32, epochs=3, eval_batch_size=512)
    cfg.launch = dataclasses.replace(cfg.launch, num_processes=WORLD)
    # The comparisons here need no checkpoints; the resume tests switch them on in a tmp run.dir.
    cfg.run = dataclasses.replace(cfg.run, checkpoint=False)
    return cfg


def _worker(rank: int, port: int, jobs: list[tuple[str, Any]], out_dir: str) -> None:
    from training.dist import distributed

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        with distributed(timeout_s=120) as ctx:
            results = []
            for kind, args in jobs:
                if kind == "dml":
                    cfg, train, test = args
                    results.append(run_dml(cfg, ctx, train, test))
                elif kind == "local_sgd":
                    cfg, parts, test = args
                    results.append(run_local_sgd(cfg, ctx, parts[rank], test))
                elif kind == "dml_refused":
                    cfg, train, test = args
                    try:
                        run_dml(cfg, ctx, train, test)
                        results.append(None)
                    except FusionError as exc:  # raised alike on every rank, so no rank hangs
                        results.append(str(exc))
                else:
                    cfg, clients, test = args
                    mine = {k: d for k, d in enumerate(clients) if k % WORLD == rank}
                    results.append(run_fedavg(cfg, ctx, mine, len(clients), test))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    except BaseException:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as fh:
            fh.write(traceback.format_exc())
        raise


def run_two_ranks(jobs: list[tuple[str, Any]], tmp_path) -> list[dict[str, Any]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        mp.spawn(_worker, args=(port, jobs, str(tmp_path)), nprocs=WORLD, join=True)
    except Exception:
        errs = [p.read_text() for p in tmp_path.glob("rank*.err")]
        raise AssertionError("\n".join(errs) or "worker failed") from None
    return torch.load(tmp_path / "rank0.pt", weights_only=False)


# ------------------------------------------------------------------------------------------------
# Hand-rolled single-process references (plain loops, no code from training.collab's runners)
# ------------------------------------------------------------------------------------------------


def hand_fedavg(
    cfg: TrainConfig, clients: list[ShardData], selections: list[list[int]], init: torch.nn.Module
):
    g = copy.deepcopy(init)
    for rnd, selected in enumerate(selections):
        anchor = {n: p.detach().clone() for n, p in g.named_parameters()}
        new_states, counts = [], []
        for k in selected:
            local = copy.deepcopy(g)
            opt = torch.optim.SGD(
                local.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=True
            )
            for e in range(cfg.collab.local_epochs):
                batches = iter_batches(
                    clients[k],
                    cfg.train.batch_size,
                    shuffle=True,
                    seed=client_shuffle_seed(cfg.train.seed, k),
                    epoch=rnd * cfg.collab.local_epochs + e,
                )
                for x, y in batches:
                    loss = F.cross_entropy(local(x), y)
                    for n, p in local.named_parameters():
                        loss = loss + cfg.collab.mu / 2 * ((p - anchor[n]) ** 2).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            new_states.append(local.state_dict())
            counts.append(len(clients[k]))
        avg = {}
        for name in new_states[0]:
            acc = sum(n * s[name].double() for n, s in zip(counts, new_states, strict=True))
            avg[name] = (acc / sum(counts)).float()
        g.load_state_dict(avg)
    return g


def hand_local_sgd(
    cfg: TrainConfig, parts: list[ShardData], init: torch.nn.Module, test: ShardData
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Two workers with persistent optimizers; equal-weight parameter mean every sync_steps steps.

    Returns the global test accuracy after each round and the final parameters.
    """
    models = [copy.deepcopy(init) for _ in parts]
    opts = [
        torch.optim.SGD(m.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=True)
        for m in models
    ]

    def stream(w: int):
        epoch = 0
        while True:
            yield from iter_batches(
                parts[w],
                cfg.train.batch_size,
                shuffle=True,
                seed=client_shuffle_seed(cfg.train.seed, w),
                epoch=epoch,
            )
            epoch += 1

    streams = [stream(w) for w in range(len(parts))]
    accs = []
    for _ in range(cfg.collab.rounds):
        for w, (m, opt) in enumerate(zip(models, opts, strict=True)):
            for _ in range(cfg.collab.sync_steps):
                x, y = next(streams[w])
                loss = F.cross_entropy(m(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        states = [m.state_dict() for m in models]
        mean = {k: sum(st[k].double() for st in states) / len(states) for k in states[0]}
        for m in models:
            m.load_state_dict({k: v.float() for k, v in mean.items()})
        with torch.no_grad():
            accs.append(_acc(torch.softmax(models[0](test.features), 1), test.labels))
    return accs, models[0].state_dict()


def hand_independent(cfg: TrainConfig, train: ShardData, rank: int) -> torch.nn.Module:
    model = make_model(cfg, "mlp784", train, peer_seed(cfg, rank), torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=True)
    for epoch in range(cfg.train.epochs):
        for x, y in iter_batches(train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def _acc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return sum(int(p == t) for p, t in zip(probs.argmax(1).tolist(), labels.tolist(), strict=True)) / len(
        labels
    )


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def six_jobs(digits, tmp_path_factory, single_thread) -> dict[str, Any]:
    """Six collaborative jobs run in one 2-rank spawn (processes are the expensive part), each
    checked by its own test below so that one failure does not hide the others."""
    train, test = digits
    # Three clients of unequal size over two ranks: rank 0 hosts clients 0 and 2.
    clients = iid_clients(train, [600, 350, 150], seed=1)
    fed = config("fedavg", rounds=2, local_epochs=2, fraction=1.0, mu=0.0)
    prox = config("fedavg", rounds=2, local_epochs=1, fraction=0.67, mu=0.1)
    dml0 = config("dml", weight=0.0)
    dml0.train = dataclasses.replace(dml0.train, epochs=2)
    lsgd = config("local_sgd", rounds=4, sync_steps=5)
    parts = iid_clients(train, [500, 300], seed=2)  # one data part per rank, unequal sizes
    avg_same = config("dml", weight=1.0, fusion="average", same_init=True)
    avg_same.train = dataclasses.replace(avg_same.train, epochs=1)
    avg_diff = config("dml", weight=1.0, fusion="average", same_init=False)
    avg_diff.train = dataclasses.replace(avg_diff.train, epochs=1)
    out_dir = tmp_path_factory.mktemp("six-jobs")
    results = run_two_ranks(
        [
            ("fedavg", (fed, clients, test)),
            ("fedavg", (prox, clients, test)),
            ("dml", (dml0, train, test)),
            ("local_sgd", (lsgd, parts, test)),
            ("dml", (avg_same, train, test)),
            ("dml_refused", (avg_diff, train, test)),
        ],
        out_dir,
    )
    rank1 = torch.load(out_dir / "rank1.pt", weights_only=False)
    names = ("fedavg", "fedprox", "dml0", "local_sgd", "average", "refused")
    return {
        "results": dict(zip(names, results, strict=True)),
        "rank1": dict(zip(names, rank1, strict=True)),
        "configs": {"fedavg": fed, "fedprox": prox, "dml0": dml0, "local_sgd": lsgd},
        "clients": clients,
        "parts": parts,
        "init": make_model(fed, "mlp784", train, fed.train.seed, torch.device("cpu")),
    }


@pytest.mark.parametrize("arm", ["fedavg", "fedprox"])
def test_fedavg_rounds_match_hand_rolled_code(six_jobs, digits, arm):
    _, test = digits
    cfg, res = six_jobs["configs"][arm], six_jobs["results"][arm]
    clients = six_jobs["clients"]
    # fedprox: 0.67 * 3 -> 2 clients a round; which ones comes from select_clients (tested on its own).
    selections = [[0, 1, 2], [0, 1, 2]] if arm == "fedavg" else [r["clients"] for r in res["history"]]
    assert all(len(s) == (3 if arm == "fedavg" else 2) for s in selections)
    ref = hand_fedavg(cfg, clients, selections, six_jobs["init"])
    for name, tensor in ref.state_dict().items():
        assert torch.allclose(res["state"][name], tensor, atol=1e-5), name
    with torch.no_grad():
        ref_acc = _acc(torch.softmax(ref(test.features), 1), test.labels)
    assert res["history"][-1]["global_acc"] == pytest.approx(ref_acc, abs=1.5 / len(test))
    assert [r["round"] for r in res["history"]] == [1, 2]


def test_local_sgd_matches_hand_rolled_code(six_jobs, digits):
    _, test = digits
    res = six_jobs["results"]["local_sgd"]
    lsgd_ref, lsgd_state = hand_local_sgd(
        six_jobs["configs"]["local_sgd"], six_jobs["parts"], six_jobs["init"], test
    )
    for name, tensor in lsgd_state.items():
        assert torch.allclose(res["state"][name], tensor, atol=1e-5), name
    assert [r["global_acc"] for r in res["history"]] == pytest.approx(lsgd_ref, abs=1.5 / len(test))
    assert [r["steps_per_round"] for r in res["history"]] == [5, 5, 5, 5]


def test_parameter_averaging_needs_a_shared_init(six_jobs, digits):
    train, test = digits
    res_avg, peer1 = six_jobs["results"]["average"], six_jobs["rank1"]["average"]
    # Allowed from a shared init, and then really evaluated: the fused accuracy is the accuracy of
    # the parameter mean of the two peers' final states, recomputed here.
    assert res_avg["init_fingerprints"][0] == res_avg["init_fingerprints"][1]
    assert res_avg["final"]["fusion"] == "average"
    mean = {
        k: (res_avg["state"][k].double() + peer1["state"][k].double()).div(2).float()
        for k in res_avg["state"]
    }
    fused = make_model(six_jobs["configs"]["dml0"], "mlp784", train, 0, torch.device("cpu"))
    fused.load_state_dict(mean)
    with torch.no_grad():
        ref_acc = _acc(torch.softmax(fused(test.features), 1), test.labels)
    assert res_avg["final"]["fused_acc"] == pytest.approx(ref_acc, abs=1.5 / len(test))
    refused = six_jobs["results"]["refused"]
    assert refused is not None and "different initialisations" in refused


def test_dml_weight_zero_is_independent_training(six_jobs, digits):
    train, test = digits
    dml0, res_dml0 = six_jobs["configs"]["dml0"], six_jobs["results"]["dml0"]
    # weight = 0: each peer is exactly the independently trained model with the same init and batches.
    models = [hand_independent(dml0, train, r) for r in range(WORLD)]
    for name, tensor in models[0].state_dict().items():
        assert torch.allclose(res_dml0["state"][name], tensor, atol=1e-5), name
    with torch.no_grad():
        refs = [torch.softmax(m(test.features), dim=1) for m in models]
    last = res_dml0["history"][-1]
    assert last["peer_acc"] == pytest.approx([_acc(p, test.labels) for p in refs], abs=1.5 / len(test))
    hand_disagree = sum(
        int(a != b) for a, b in zip(refs[0].argmax(1).tolist(), refs[1].argmax(1).tolist(), strict=True)
    )
    assert last["disagreement"] == pytest.approx(hand_disagree / len(test), abs=1.5 / len(test))
    assert res_dml0["init_fingerprints"][0] != res_dml0["init_fingerprints"][1]


PATHOLOGICAL = [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]  # four clients, 2-3 classes each
SEEDS = (0, 1, 2)


def test_robust_effects_over_seeds(digits, tmp_path):
    """DML disagreement below independent; FedAvg IID above pathological; ensemble >= mean peer."""
    train, test = digits
    jobs: list[tuple[str, Any]] = []
    for seed in SEEDS:
        for weight in (0.0, 1.0):
            cfg = config("dml", weight=weight)
            cfg.train = dataclasses.replace(cfg.train, seed=seed, epochs=3)
            jobs.append(("dml", (cfg, train, test)))
        for clients in (iid_clients(train, [350] * 4, seed=seed), class_clients(train, PATHOLOGICAL)):
            cfg = config("fedavg", rounds=3, local_epochs=3)
            cfg.train = dataclasses.replace(cfg.train, seed=seed)
            jobs.append(("fedavg", (cfg, clients, test)))
    results = run_two_ranks(jobs, tmp_path)
    indep, dml, iid, patho = (results[i::4] for i in range(4))

    def mean(xs):
        return sum(xs) / len(xs)

    d_ind = [r["final"]["disagreement"] for r in indep]
    d_dml = [r["final"]["disagreement"] for r in dml]
    kl_ind = [r["final"]["pairwise_kl"] for r in indep]
    kl_dml = [r["final"]["pairwise_kl"] for r in dml]
    a_iid = [r["history"][-1]["global_acc"] for r in iid]
    a_pat = [r["history"][-1]["global_acc"] for r in patho]
    summary = (
        f"disagree {d_ind} -> {d_dml}; kl {kl_ind} -> {kl_dml}; fedavg iid {a_iid} vs pathological {a_pat}"
    )
    assert mean(d_dml) < mean(d_ind), summary
    assert sum(d < i for d, i in zip(d_dml, d_ind, strict=True)) >= 2, summary
    assert mean(kl_dml) < mean(kl_ind), summary
    assert mean(a_iid) > mean(a_pat) + 0.02, summary
    assert sum(i > p for i, p in zip(a_iid, a_pat, strict=True)) >= 2, summary
    for r in indep + dml:
        assert r["final"]["ensemble_acc"] >= r["final"]["mean_peer_acc"] - 1.0 / len(test), summary
    # Pathological clients drift apart: their local models disagree far more than IID clients'.
    assert mean([r["history"][-1]["disagreement"] for r in patho]) > mean(
        [r["history"][-1]["disagreement"] for r in iid]
    )
    print(summary)
