"""`proxytool vllm`: vLLM's OpenAI-compatible server steered inside the engine by proxytool's processor."""

from typing import Annotated

import typer

from proxytool.cli import options as o


def register(app: typer.Typer) -> None:
    app.command(
        "vllm",
        help="Serve the base with vLLM (its own venv), steered exactly inside the engine by the expert pair; "
        "arguments after '--' go to vLLM (docs/vllm.md).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(vllm)


def vllm(
    ctx: typer.Context,
    base: Annotated[
        str, typer.Option("--base", "-b", help="The model vLLM serves: a registry name, folder or hub id.")
    ],
    expert: o.Experts = None,
    anti_expert: o.AntiExperts = None,
    alpha: o.Alphas = None,
    vllm_python: Annotated[
        str,
        typer.Option(envvar="PROXYTOOL_VLLM_PYTHON", help="The python of vLLM's venv (e.g. .venv-vllm/bin/python)."),
    ] = ".venv-vllm/bin/python",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="The model id clients ask for (default: --base's name).")
    ] = None,
    pair_dtype: Annotated[str, typer.Option(help="The pair's dtype: auto, float32, bfloat16, float16.")] = "auto",
    pair_device: Annotated[str | None, typer.Option(help="Where the pair runs (default: vLLM's device).")] = None,
    print_command: Annotated[
        bool, typer.Option("--print-command", help="Print the checked command line instead of running it.")
    ] = False,
) -> None:
    from proxytool.decoding.checks import one_of
    from proxytool.engines.vllm import PluginConfig
    from proxytool.engines.vllm_launch import plan_launch
    from proxytool.errors import ProxyToolError
    from proxytool.models.registry import DTYPE_ALIASES, DTYPES
    from proxytool.serving.server import check_bindable

    if not 0 < port < 65536:
        raise ProxyToolError(f"--port must be in 1..65535 (got {port})")
    one_of("--pair-dtype", pair_dtype, (*DTYPES, *DTYPE_ALIASES))
    config = PluginConfig(
        experts=tuple(expert or ()),
        anti_experts=tuple(anti_expert or ()),
        alphas=tuple(alpha or ()),
        dtype=pair_dtype,
        device=pair_device,
    )
    launch = plan_launch(
        vllm_python, base, config, host=host, port=port, served_name=served_model_name, vllm_args=list(ctx.args)
    )
    if print_command:
        print(launch.shell())
        return
    check_bindable(host, port)  # a port in use is found before vLLM spends a minute loading
    launch.exec()
