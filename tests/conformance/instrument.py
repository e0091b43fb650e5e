"""The must-use plugin that instruments a site for the harness.

- `nonce_life` returns the option `batchgpt_conformance_nonce_life` when it is set (seconds), so
  the harness can shorten the real nonce life for one phase of a run and restore it after;
- every WordPress HTTP API call to api.openai.com is sent to the fake upstream instead, by
  rewriting the curl handle's URL in `http_api_curl` (the legacy chat calls OpenAI through
  `wp_remote_request`, whose URL is a constant); AIPKit streams with raw curl, which no hook
  reaches, so there the provider's own `base_url` setting points at the fake (plugin.py);
- every outgoing WordPress HTTP request is logged, marked when WP_HTTP_BLOCK_EXTERNAL blocks it;
- every admin-ajax request's action, and every failed nonce check (`wp_verify_nonce_failed`, which
  all of the plugin's checks go through), is appended as a JSON line to the events log: the
  server's own account of which request kinds a run sent and which nonces it refused.
"""

from __future__ import annotations

from tests.conformance.wordpress import WordPress

NONCE_LIFE_OPTION = "batchgpt_conformance_nonce_life"

MU_PLUGIN = r"""<?php
/**
 * Plugin Name: batchgpt conformance instrumentation
 * Description: Nonce life on demand, api.openai.com sent to the fake upstream,
 *   outgoing HTTP logged.
 */
if (!defined('ABSPATH')) {
    exit;
}

add_filter('nonce_life', function ($life) {
    $override = (int) get_option('__NONCE_LIFE_OPTION__', 0);
    return $override > 0 ? $override : $life;
}, 99);

function batchgpt_conformance_log($line) {
    if (defined('BATCHGPT_CONFORMANCE_LOG')) {
        $entry = gmdate('c') . ' ' . $line . "\n";
        @file_put_contents(BATCHGPT_CONFORMANCE_LOG, $entry, FILE_APPEND | LOCK_EX);
    }
}

function batchgpt_conformance_target($url) {
    $parts = wp_parse_url($url);
    if (!is_array($parts) || ($parts['host'] ?? '') !== 'api.openai.com') {
        return $url;
    }
    $target = rtrim(BATCHGPT_CONFORMANCE_UPSTREAM, '/') . ($parts['path'] ?? '/');
    return isset($parts['query']) ? $target . '?' . $parts['query'] : $target;
}

function batchgpt_conformance_event($event) {
    if (defined('BATCHGPT_CONFORMANCE_EVENTS')) {
        $event['time'] = microtime(true);
        $line = wp_json_encode($event) . "\n";
        @file_put_contents(BATCHGPT_CONFORMANCE_EVENTS, $line, FILE_APPEND | LOCK_EX);
    }
}

function batchgpt_conformance_ajax_action() {
    return isset($_REQUEST['action']) ? sanitize_key(wp_unslash($_REQUEST['action'])) : '';
}

add_action('admin_init', function () {
    if (wp_doing_ajax()) {
        batchgpt_conformance_event([
            'event' => 'ajax',
            'method' => $_SERVER['REQUEST_METHOD'] ?? '',
            'action' => batchgpt_conformance_ajax_action(),
        ]);
    }
}, 0);

add_action('wp_verify_nonce_failed', function ($nonce, $action) {
    batchgpt_conformance_event([
        'event' => 'nonce_failed',
        'nonce_action' => (string) $action,
        'action' => batchgpt_conformance_ajax_action(),
    ]);
}, 10, 2);

add_filter('pre_http_request', function ($pre, $args, $url) {
    $http = new WP_Http();
    $blocked = $http->block_request($url) ? ' (blocked)' : '';
    batchgpt_conformance_log(($args['method'] ?? 'GET') . ' ' . $url . $blocked);
    return $pre;
}, 1, 3);

add_action('http_api_curl', function ($handle, $args, $url) {
    $target = batchgpt_conformance_target($url);
    if ($target !== $url) {
        curl_setopt($handle, CURLOPT_URL, $target);
        batchgpt_conformance_log('  sent to ' . $target);
    }
}, 1, 3);
""".replace("__NONCE_LIFE_OPTION__", NONCE_LIFE_OPTION)


def install(site: WordPress) -> None:
    site.write_mu_plugin("batchgpt-conformance.php", MU_PLUGIN)


def set_nonce_life(site: WordPress, seconds: int | None) -> None:
    """Shorten the site's nonce life to `seconds`, or restore WordPress' default (None)."""
    if seconds is None:
        site.php(f"delete_option('{NONCE_LIFE_OPTION}');")
    else:
        site.php(f"update_option('{NONCE_LIFE_OPTION}', {int(seconds)});")
