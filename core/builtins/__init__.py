"""Built-in default plugins, loaded by dotted name before the ``meshhub`` entry-point group."""

DEFAULT_PLUGINS: tuple[str, ...] = (
    "meshhub.builtins.sqlite_store",
    "meshhub.builtins.core_actions",
    "meshhub.builtins.conversation_actions",
    "meshhub.builtins.admission_actions",
    "meshhub.builtins.hello_auth",
    "meshhub.builtins.reactions",
    "meshhub.builtins.pins",
    "meshhub.builtins.approvals",
    "meshhub.builtins.surfaces",
    "meshhub.builtins.files_actions",
    "meshhub.builtins.shared_state",
    "meshhub.builtins.memories",
    "meshhub.builtins.conversation_logs",
    "meshhub.builtins.search_actions",
    "meshhub.builtins.active_files",
    "meshhub.bridge.pairing",
)
