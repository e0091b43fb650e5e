"""The plugin at one release: extracted from the mirror, activated, configured, put on a page.

The mirror is a git repository with one commit per release whose subject is the version
(github:WordPressBugBounty/plugins-gpt3-ai-content-generator); its path comes from the caller
and nothing from it is ever copied into batchgpt's tree. Per generation (PROTOCOL.md):

- legacy (<= 2.2): the OpenAI key is the `api_key` column of the `wpaicg_settings` row in the
  plugin's own `wp_wpaicg` table; a page carries the shortcode `[wpaicg_chatgpt]` with the
  shortcode's defaults (`wpaicg_chat_shortcode_options`, unset); OpenAI is reached by
  `wp_remote_request` to a constant URL, redirected by the must-use plugin.
- AIPKit (>= 2.3): providers live in the option `aipkit_options[providers][OpenAI]`
  (`api_key`, `base_url`, `api_version`, `api_mode`), written with the plugin's own
  `AIPKit_Providers::save_provider_data`; activation creates the default bot (a post of type
  `aipkit_chatbot` marked by meta `_aipkit_default_bot = 1`, settings in `_aipkit_*` post meta,
  popup deploy mode in 2.4.71, inline in 2.3); its provider and model are `_aipkit_provider` /
  `_aipkit_model`. The page carries `[aipkit_chatbot id=N]`.

The chat box is on two pages: the site's front page (as on chatgpt.es) and `/chat/`.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conformance.services import ServiceError
from tests.conformance.wordpress import WordPress

SLUG = "gpt3-ai-content-generator"
MAIN_FILE = f"{SLUG}/{SLUG}.php"
API_KEY = "sk-conformance-0000000000000000000000000000000000000000"
MODEL = "gpt-4o-mini"
LEGACY, AIPKIT = "legacy", "aipkit"


def version_key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split(".") if part.isdigit())


def generation_of(release: str) -> str:
    """Which chat protocol a release speaks, by version (PROTOCOL.md's table)."""
    return AIPKIT if version_key(release) >= (2, 3) else LEGACY


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    git_dir = repo if (repo / "HEAD").exists() and (repo / "objects").exists() else repo / ".git"
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=False)


def release_commit(repo: Path, release: str) -> str:
    """The mirror's commit whose subject is exactly `release`."""
    done = _git(repo, "log", "--all", "--format=%H %s")
    if done.returncode != 0:
        raise ServiceError(f"{repo} is not a git repository: {done.stderr.decode()[:300]}")
    for line in done.stdout.decode().splitlines():
        commit, _, subject = line.partition(" ")
        if subject.strip() == release:
            return commit
    raise ServiceError(f"release {release} not found in {repo} (no commit with that subject)")


def known_releases(repo: Path) -> list[str]:
    done = _git(repo, "log", "--all", "--format=%s")
    return [line.strip() for line in done.stdout.decode().splitlines() if line.strip()]


def extract(repo: Path, commit: str, plugins_dir: Path) -> None:
    """`git archive` the plugin folder of `commit` into `plugins_dir`."""
    archive = subprocess.Popen(
        [
            "git",
            f"--git-dir={repo if (repo / 'objects').exists() else repo / '.git'}",
            "archive",
            "--format=tar",
            commit,
            SLUG,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    untar = subprocess.run(
        ["tar", "-x", "-C", str(plugins_dir)], stdin=archive.stdout, capture_output=True
    )
    assert archive.stdout is not None
    archive.stdout.close()
    archive_err = archive.stderr.read().decode() if archive.stderr else ""
    if archive.wait() != 0 or untar.returncode != 0:
        raise ServiceError(f"extracting {commit[:10]} failed: {archive_err}{untar.stderr.decode()}")
    if not (plugins_dir / MAIN_FILE).exists():
        raise ServiceError(f"{commit[:10]} has no {MAIN_FILE}")


@dataclass
class ChatSetup:
    """Where the chat box is and how it was configured."""

    release: str
    generation: str
    page_url: str
    path_url: str
    page_id: int
    bot_id: int = 0
    upstream_route: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def install(site: WordPress, repo: Path, release: str) -> str:
    """Extract and activate `release`; returns its commit."""
    commit = release_commit(repo, release)
    extract(repo, commit, site.content_dir / "plugins")
    site.chown()
    result = site.php(
        f"""
        wp_set_current_user(1);
        $outcome = activate_plugin('{MAIN_FILE}');
        $result = [
            'error' => is_wp_error($outcome) ? $outcome->get_error_message() : null,
            'active' => is_plugin_active('{MAIN_FILE}'),
            'version' => get_plugin_data(WP_PLUGIN_DIR . '/{MAIN_FILE}', false, false)['Version'],
        ];
        """
    )
    if result["error"] or not result["active"]:
        raise ServiceError(f"activating {release} failed: {result}")
    if result["version"] != release:
        raise ServiceError(f"commit {commit[:10]} holds version {result['version']}, not {release}")
    return commit


_PAGES = """
$page_ids = [];
foreach (['home' => 'Home', 'chat' => 'Chat'] as $slug => $title) {
    $id = wp_insert_post([
        'post_title' => $title, 'post_name' => $slug, 'post_type' => 'page',
        'post_status' => 'publish', 'post_content' => $shortcode, 'post_author' => 1,
    ], true);
    if (is_wp_error($id)) { throw new Exception($id->get_error_message()); }
    $page_ids[$slug] = $id;
}
update_option('show_on_front', 'page');
update_option('page_on_front', $page_ids['home']);
$page_id = $page_ids['home'];
$pages = ['url' => home_url('/'), 'path_url' => get_permalink($page_ids['chat'])];
"""


def configure(site: WordPress, release: str, upstream_url: str) -> ChatSetup:
    """Point the plugin at the fake upstream and put its chat box on a page."""
    if generation_of(release) == LEGACY:
        return _configure_legacy(site, release)
    return _configure_aipkit(site, release, upstream_url)


def _configure_legacy(site: WordPress, release: str) -> ChatSetup:
    result = site.php(
        f"""
        wp_set_current_user(1);
        global $wpdb;
        $table = $wpdb->prefix . 'wpaicg';
        $updated = $wpdb->update($table, ['api_key' => '{API_KEY}'], ['name' => 'wpaicg_settings']);
        if ($updated === false) {{
            throw new Exception('no wpaicg_settings row: ' . $wpdb->last_error);
        }}
        update_option('wpaicg_provider', 'OpenAI');
        $shortcode = '[wpaicg_chatgpt]';
        {_PAGES}
        $query = $wpdb->prepare("SELECT * FROM $table WHERE name = %s", 'wpaicg_settings');
        $row = $wpdb->get_row($query, ARRAY_A);
        unset($row['api_key']);
        $result = [
            'page_id' => $page_id, 'url' => $pages['url'], 'path_url' => $pages['path_url'],
            'wpaicg_settings' => $row,
            'wpaicg_chat_shortcode_options' => get_option('wpaicg_chat_shortcode_options', null),
            'wpaicg_provider' => get_option('wpaicg_provider'),
        ];
        """
    )
    return ChatSetup(
        release=release,
        generation=LEGACY,
        page_url=result["url"],
        path_url=result["path_url"],
        page_id=int(result["page_id"]),
        upstream_route="wp_remote_request to api.openai.com, rewritten in http_api_curl",
        settings=result,
    )


def _configure_aipkit(site: WordPress, release: str, upstream_url: str) -> ChatSetup:
    result = site.php(
        f"""
        wp_set_current_user(1);
        foreach (['classes/dashboard/class-aipkit_providers.php',
                  'classes/chat/storage/class-aipkit_default_bot_setup.php'] as $file) {{
            if (file_exists(WPAICG_PLUGIN_DIR . $file)) {{
                require_once WPAICG_PLUGIN_DIR . $file;
            }}
        }}
        \\WPAICG\\AIPKit_Providers::save_provider_data('OpenAI', [
            'api_key' => '{API_KEY}', 'base_url' => '{upstream_url}', 'model' => '{MODEL}',
        ]);
        \\WPAICG\\AIPKit_Providers::save_current_provider('OpenAI');
        $existing = \\WPAICG\\Chat\\Storage\\DefaultBotSetup::get_default_bot_id();
        if (!$existing) {{ \\WPAICG\\Chat\\Storage\\DefaultBotSetup::ensure_default_chatbot(); }}
        $bot_id = (int) \\WPAICG\\Chat\\Storage\\DefaultBotSetup::get_default_bot_id();
        if (!$bot_id) {{ throw new Exception('no default chatbot'); }}
        update_post_meta($bot_id, '_aipkit_provider', 'OpenAI');
        update_post_meta($bot_id, '_aipkit_model', '{MODEL}');
        $shortcode = '[aipkit_chatbot id=' . $bot_id . ']';
        {_PAGES}
        $meta = [];
        foreach (get_post_meta($bot_id) as $key => $values) {{ $meta[$key] = $values[0]; }}
        ksort($meta);
        $options = get_option('aipkit_options');
        $openai = $options['providers']['OpenAI'] ?? [];
        unset($openai['api_key']);
        $result = [
            'page_id' => $page_id, 'url' => $pages['url'], 'path_url' => $pages['path_url'],
            'bot_id' => $bot_id,
            'default_bot_created_on_activation' => (bool) $existing,
            'bot_meta' => $meta, 'openai_provider' => $openai,
            'provider' => $options['provider'] ?? null,
        ];
        """
    )
    return ChatSetup(
        release=release,
        generation=AIPKIT,
        page_url=result["url"],
        path_url=result["path_url"],
        page_id=int(result["page_id"]),
        bot_id=int(result["bot_id"]),
        upstream_route="aipkit_options providers.OpenAI.base_url (raw curl stream)",
        settings=result,
    )


def set_guest_quota(site: WordPress, setup: ChatSetup, tokens: int | None) -> None:
    """Give guests a token quota on the chat box (None removes it)."""
    if setup.generation == AIPKIT:
        value = "" if tokens is None else str(tokens)
        site.php(f"update_post_meta({setup.bot_id}, '_aipkit_token_guest_limit', '{value}');")
        return
    limited = "false" if tokens is None else "true"
    site.php(
        f"""
        $options = get_option('wpaicg_chat_shortcode_options', []);
        if (!is_array($options)) {{ $options = []; }}
        $options['guest_limited'] = {limited};
        $options['guest_tokens'] = {tokens or 0};
        update_option('wpaicg_chat_shortcode_options', $options);
        """
    )
