"""DVC stage `clone@<key>`: train and evaluate the batched cloner of one model (tracked in MLflow)."""

from attendome.clone.run import run_clone
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, key = stage_args(__doc__, per_model=True)
    h = run_clone(key, params)
    say(f"clone@{key}: {h['n_heads']} heads x {h['n_seeds']} seeds; held-out KL {h['heldout_kl']} "
        f"(positional {h['positional_kl']}, ratio {h['ratio_to_positional']}) -> models/cloners/{key}.safetensors")


if __name__ == "__main__":
    run_stage(main)
