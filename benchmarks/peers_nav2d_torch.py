"""A plain PyTorch reference of jmeta's MAML-TRPO meta-iteration on 2D navigation, the peer of
``jmeta bench nav2d-maml`` (run by it with the Python of ``../shared/bench/setup-peers.sh``).

Why not learn2learn: its meta-RL parts (``learn2learn.gym``'s ``Particles2D`` and the ``maml_trpo.py`` example)
need cherry-rl and gym, which ``setup-peers.sh`` does not install, and the example steps its environments in
Python worker processes one step at a time; this reference runs the same workload as jmeta's compiled
meta-iteration instead, the way pytorch-maml-rl structures it, on tensors batched over tasks and episodes:

* 2D navigation (Finn et al. 2017, sec. 5.3; MAML's code): goals uniform in [-0.5, 0.5]^2, start at the origin,
  actions clipped to [-0.1, 0.1], reward minus the distance to the goal, done within 0.01 of it or at H = 100;
* a Gaussian MLP policy (2 x 100 ReLU, a learned state-independent log-std);
* per task: episodes with the policy, MAML's linear feature baseline fitted by regularised least squares,
  advantages ``returns-to-go - baseline`` (discount 0.99, GAE lambda 1) normalised, one inner policy-gradient
  step of 0.1 on the Loaded-DiCE surrogate kept in the graph (second order), episodes with the adapted policy;
* a TRPO outer step on the mean post-adaptation surrogate: 10 conjugate-gradient iterations on Fisher-vector
  products (double backward through the inner step, damping 1e-5), KL bound 0.01, up to 15 halvings.

Prints ``env steps/s N`` and, last, ``meta-iterations/s N`` (timed after one warm-up meta-iteration).

Run: python benchmarks/peers_nav2d_torch.py [--iterations 3] [--tasks 20] [--trajectories 20] [--threads N]
"""

import argparse
import math
import time

import torch

HORIZON, MAX_SPEED, TOLERANCE, DISCOUNT = 100, 0.1, 0.01, 0.99


def policy_init(hidden=(100, 100)):
    """``[w1, b1, ..., wL, bL, log_std]``, Glorot-uniform weights, zero biases, log-std 0."""
    sizes, params = [2, *hidden, 2], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        params += [torch.empty(fan_in, fan_out).uniform_(-bound, bound), torch.zeros(fan_out)]
    return [p.requires_grad_() for p in [*params, torch.zeros(2)]]


def mean_and_std(params, obs):
    """The policy's mean and std at ``obs`` ``[..., 2]``; weights may carry a leading task axis."""
    x = obs
    layers = params[:-1]
    for i in range(0, len(layers), 2):
        w, b = layers[i], layers[i + 1]
        x = x @ w + (b.unsqueeze(-2) if b.dim() == 2 else b)
        if i + 2 < len(layers):
            x = torch.relu(x)
    log_std = params[-1]
    return x, (log_std.unsqueeze(-2) if log_std.dim() == 2 else log_std).exp()


def log_prob(params, obs, actions):
    mean, std = mean_and_std(params, obs)
    z = (actions - mean) / std
    return (-0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


@torch.no_grad()
def rollout(params, goals, episodes):
    """Episodes of every task at once: observations and actions ``[T, N, H, 2]``, rewards and mask
    ``[T, N, H]``. ``params``: shared (2-D weights) or one set per task (3-D)."""
    tasks = goals.shape[0]
    position = torch.zeros(tasks, episodes, 2)
    alive = torch.ones(tasks, episodes)
    obs, actions, rewards, masks = [], [], [], []
    for t in range(HORIZON):
        mean, std = mean_and_std(params, position)
        action = mean + std * torch.randn_like(mean)
        obs.append(position)
        actions.append(action)
        masks.append(alive)
        position = position + action.clamp(-MAX_SPEED, MAX_SPEED)
        distance = (position - goals[:, None]).norm(dim=-1)
        rewards.append(-distance)
        alive = alive * (distance >= TOLERANCE).float() * float(t + 1 < HORIZON)
    return torch.stack(obs, 2), torch.stack(actions, 2), torch.stack(rewards, 2), torch.stack(masks, 2)


def advantages(obs, rewards, mask):
    """One task's ``[N, H]`` advantages: returns-to-go minus MAML's linear baseline, normalised."""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        next_mask = mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        running = rewards[:, t] + DISCOUNT * next_mask * running
        returns[:, t] = running
    o = obs.clamp(-10, 10)
    t = (torch.arange(rewards.shape[1], dtype=torch.float32) / 100.0)[None, :, None].expand(*rewards.shape, 1)
    x = torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], -1).reshape(-1, 8)
    w = mask.reshape(-1, 1)
    coefficients = torch.linalg.solve((w * x).T @ x + 1e-5 * torch.eye(8), (w * x).T @ returns.reshape(-1))
    adv = (returns - (x @ coefficients).reshape(returns.shape)) * mask
    count = mask.sum().clamp(min=1)
    mean = adv.sum() / count
    std = (((adv - mean) ** 2) * mask).sum().div(count).sqrt()
    return ((adv - mean) / (std + 1e-8) * mask).detach()


def dice_surrogate(params, obs, actions, adv, mask):
    logp = log_prob(params, obs, actions) * mask
    upto = logp.cumsum(-1)
    before = upto - logp
    weighted = (torch.exp(upto - upto.detach()) - torch.exp(before - before.detach())) * adv
    return weighted.sum() / mask.sum().clamp(min=1)


def adapt(params, batch, inner_lr, create_graph):
    obs, actions, adv, mask = batch
    grads = torch.autograd.grad(dice_surrogate(params, obs, actions, adv, mask), params, create_graph=create_graph)
    return [p + inner_lr * g for p, g in zip(params, grads, strict=True)]


def outer_terms(params, pre, post, old, inner_lr, create_graph=True):
    """Mean over tasks of (surrogate, KL(old || adapted)) on the post-adaptation episodes."""
    surrogates, kls = [], []
    for task in range(len(pre)):
        adapted = adapt(params, pre[task], inner_lr, create_graph)
        obs, actions, adv, mask = post[task]
        mean, std = mean_and_std(adapted, obs)
        old_mean, old_std = old[task]
        new_logp = log_prob(adapted, obs, actions)
        z = (actions - old_mean) / old_std
        old_logp = (-0.5 * z**2 - torch.log(old_std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        steps = mask.sum().clamp(min=1)
        surrogates.append((torch.exp(new_logp - old_logp) * adv * mask).sum() / steps)
        kl = (torch.log(std / old_std) + (old_std**2 + (old_mean - mean) ** 2) / (2 * std**2) - 0.5).sum(-1)
        kls.append((kl * mask).sum() / steps)
    return torch.stack(surrogates).mean(), torch.stack(kls).mean()


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(fvp, b, iterations=10, tol=1e-10):
    x, r, p = torch.zeros_like(b), b.clone(), b.clone()
    rr = r @ r
    for _ in range(iterations):
        if rr < tol:
            break
        ap = fvp(p)
        alpha = rr / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        new_rr = r @ r
        p, rr = r + new_rr / rr * p, new_rr
    return x


def meta_iteration(params, tasks, episodes, inner_lr=0.1, max_kl=0.01, damping=1e-5):
    goals = torch.rand(tasks, 2) - 0.5
    obs, actions, rewards, mask = rollout(params, goals, episodes)
    pre = [(obs[i], actions[i], advantages(obs[i], rewards[i], mask[i]), mask[i]) for i in range(tasks)]
    adapted = [adapt(params, pre[i], inner_lr, create_graph=False) for i in range(tasks)]
    stacked = [torch.stack([a[j] for a in adapted]).detach() for j in range(len(params))]
    obs2, actions2, rewards2, mask2 = rollout(stacked, goals, episodes)
    post = [(obs2[i], actions2[i], advantages(obs2[i], rewards2[i], mask2[i]), mask2[i]) for i in range(tasks)]
    with torch.no_grad():
        old = [mean_and_std([a.detach() for a in adapted[i]], obs2[i]) for i in range(tasks)]
    surrogate, kl = outer_terms(params, pre, post, old, inner_lr)
    g = flat(torch.autograd.grad(surrogate, params, retain_graph=True))
    grad_kl = flat(torch.autograd.grad(kl, params, create_graph=True))

    def fvp(v):
        return flat(torch.autograd.grad(grad_kl @ v, params, retain_graph=True)) + damping * v

    direction = conjugate_gradient(fvp, g)
    step = torch.sqrt(2 * max_kl / (direction @ fvp(direction)).clamp(min=1e-12)) * direction
    old_params = [p.detach().clone() for p in params]
    value = surrogate.item()
    for k in range(16):
        offset = 0
        with torch.no_grad():
            for p, p0 in zip(params, old_params, strict=True):
                p.copy_(p0 + 0.5**k * step[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        new_surrogate, new_kl = outer_terms(params, pre, post, old, inner_lr, create_graph=False)
        if new_kl.item() <= max_kl and new_surrogate.item() > value:
            return
    with torch.no_grad():  # every candidate rejected: the parameters are kept
        for p, p0 in zip(params, old_params, strict=True):
            p.copy_(p0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=3, help="timed meta-iterations after one warm-up")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--trajectories", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = policy_init()
    meta_iteration(params, args.tasks, args.trajectories)  # warm-up
    start = time.perf_counter()
    for _ in range(args.iterations):
        meta_iteration(params, args.tasks, args.trajectories)
    seconds = time.perf_counter() - start
    steps = 2 * args.tasks * args.trajectories * HORIZON * args.iterations  # two rollout stages, as jmeta counts
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"env steps/s {steps / seconds:.1f}")
    print(f"meta-iterations/s {args.iterations / seconds:.4f}")


if __name__ == "__main__":
    main()
