import pytest


@pytest.fixture(scope="session")
def proxy_models(tiny_models):
    """The tiny proxy setup every serving test shares (base + expert/anti pair, α 1)."""
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

    setup = ProxySetup(
        base=str(tiny_models["base"]),
        experts=[str(tiny_models["expert"])],
        anti_experts=[str(tiny_models["anti"])],
        alphas=[1.0],
        loading=LoadingOptions(overlap="off"),
    )
    return load_proxy_models(setup)


@pytest.fixture(scope="module")
def server(proxy_models):
    """A server on 127.0.0.1 and a free port for the whole module; always stopped."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    config = ServerConfig(model_name="tiny", expert_names=("tiny-expert",), max_batch=8, max_queue=8)
    with BackgroundServer(proxy_models, config) as running:
        yield running


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
