"""What both chat generations share, kept light so that `--help` and the run options can name
them without loading the HTTP client: WordPress's AJAX endpoint and the generations' names."""

AJAX_PATH = "/wp-admin/admin-ajax.php"
#: What `--chat` accepts: read the generation from the page, or speak the one named.
CHATS = ("auto", "legacy", "aipkit")
