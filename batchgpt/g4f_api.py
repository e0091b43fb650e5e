"""`python -m batchgpt.g4f_api`: gpt4free's own API server with batchgpt's `ChatGptEs` as its
provider, so any OpenAI client reaches chatgpt.es (or a site like it) at http://HOST:PORT/v1.

g4f is optional (`pip install 'batchgpt[g4f]'`). The provider is registered as g4f's own
`g4f api --provider NAME` registers one, with `AppConfig.set_config(provider=...)`: g4f takes a
provider class there as well as a name, which is how a provider g4f does not ship is served.
"""

from __future__ import annotations

import click

from batchgpt.providers.chatgpt_es.provider import ChatGptEs
from batchgpt.providers.chatgpt_es.wordpress import AJAX_PATH

#: g4f's own default port.
DEFAULT_PORT = 1337
INSTALL_HINT = "pip install 'batchgpt[g4f]'"
#: What g4f 8.8.6 downloads when `g4f.api` is imported (`g4f.client.factory`).
PROVIDER_LIST = "https://g4f.dev/dist/js/providers.json"


def provider_at(base_url: str) -> type[ChatGptEs]:
    """`ChatGptEs` talking to `base_url`: the class itself for chatgpt.es, else a subclass that
    keeps its name, so g4f's answers still say `"provider": "ChatGptEs"`."""
    base_url = base_url.rstrip("/")
    if base_url == ChatGptEs.url:
        return ChatGptEs
    attributes = {
        "url": base_url,
        "api_endpoint": base_url + AJAX_PATH,
        "__module__": ChatGptEs.__module__,
    }
    return type(ChatGptEs.__name__, (ChatGptEs,), attributes)


def serve(provider: type[ChatGptEs], host: str, port: int) -> None:
    """Run g4f's API server (uvicorn) on `host:port` with `provider` as its default provider,
    until interrupted; a `ClickException` saying why when it cannot start."""
    try:
        from g4f.api import AppConfig, run_api
    except ImportError as error:
        raise click.ClickException(
            f"gpt4free's API server is not installed ({error}): {INSTALL_HINT}"
        ) from None
    except OSError as error:
        raise click.ClickException(
            f"gpt4free's API server did not start: importing it fetches {PROVIDER_LIST}"
            f" (once a day, then cached), which failed: {error}"
        ) from None
    AppConfig.set_config(provider=provider, gui=False)
    click.echo(f"gpt4free's API server at http://{host}:{port}/v1, ChatGptEs → {provider.url}")
    run_api(host=host, port=port)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve on; loopback serves this machine only.",
)
@click.option(
    "--base-url",
    default=ChatGptEs.url,
    show_default=True,
    help="The chat page ChatGptEs talks to (e.g. `batchgpt emulator`'s URL).",
)
def main(port: int, host: str, base_url: str) -> None:
    """Serve chatgpt.es as an OpenAI-compatible API through gpt4free's API server.

    Clients use http://HOST:PORT/v1 as their base URL, any API key, and model gpt-4o,
    gpt-4o-mini, gpt-4 or auto.
    """
    if not base_url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--base-url")
    serve(provider_at(base_url), host, port)


if __name__ == "__main__":
    main()
