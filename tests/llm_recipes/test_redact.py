from llm_recipes.redact import REDACTED, move_hub_token_to_env, redact_argv

TOKEN = "hf_" + "Ab3" * 12


def test_secret_flags_and_token_shaped_values_are_redacted():
    argv = ["recipes/sft.py", "--hub_token", TOKEN, "--learning_rate", "1e-3", f"--hub_token={TOKEN}",
            "--wandb_api_key", "abc123", "--note", f"token {TOKEN} inside", "--report_to", "none"]
    assert redact_argv(argv) == ["recipes/sft.py", "--hub_token", REDACTED, "--learning_rate", "1e-3",
                                 f"--hub_token={REDACTED}", "--wandb_api_key", REDACTED, "--note",
                                 f"token {REDACTED} inside", "--report_to", "none"]


def test_a_hub_token_flag_moves_to_the_environment(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)

    class Args:
        hub_token = TOKEN

    args = Args()
    move_hub_token_to_env(args)
    import os

    assert args.hub_token is None and os.environ["HF_TOKEN"] == TOKEN
