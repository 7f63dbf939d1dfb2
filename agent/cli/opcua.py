"""OPC UA on the command line: `discover opcua` (browse a server, write its tag list) and
`certs create` (the agent's application certificate)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.discover import OutOption, TimeoutOption
from agent.cli.exits import EXIT_FAILED, Refused, refusing, writing
from agent.cli.options import JsonOption
from agent.cli.output import console, err_console, print_json, quiet_asyncua
from agent.extras import needs


@dataclass(frozen=True, slots=True)
class OpcuaVariable:
    node_id: str
    browse_path: str
    data_type: str
    access: str
    array_length: int | None
    left_out: str | None


@dataclass(frozen=True, slots=True)
class OpcuaReport:
    """`discover opcua --json`."""

    endpoint: str
    source: str | None
    security: str
    root: str
    depth: int
    nodes_browsed: int
    requests: int
    variables: list[OpcuaVariable]
    tags: int
    tags_file: str | None
    tags_files: dict[str, int]


def discover_opcua(
    target: Annotated[
        str | None,
        typer.Argument(
            help="opc.tcp://HOST:PORT (with --source: the source's endpoint if not given)."
        ),
    ] = None,
    root: Annotated[
        str, typer.Option("--root", help="opcua: the node to browse from (a node id).")
    ] = "Objects",
    depth: Annotated[int, typer.Option("--depth", help="opcua: levels browsed below --root.")] = 5,
    timeout: TimeoutOption = None,
    out: OutOption = None,
    out_format: Annotated[
        str, typer.Option("--format", help="opcua: the --out file as csv or toml.")
    ] = "csv",
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="opcua: the config file holding --source."),
    ] = None,
    source_name: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="opcua: connect as this \\[\\[sources]] entry does (security, trust, login).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """An OPC UA server's variables, and a tag list of them (CSV or TOML).

    Anonymously with policy None, or (`--config --source`) as the agent connects for a source.
    """
    from rich.progress import Progress

    from agent.config.loader import load_config
    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop

    with needs("OPC UA", "opcua"):
        from connectors.opcua import discover as found

    endpoint = target

    if out_format not in ("csv", "toml"):
        raise Refused(f"--format must be csv or toml, got {out_format!r}")
    with refusing(ValueError):
        found.parse_node_id(root)
        found.check_depth(depth)
        time_limit = parse_duration(timeout or "5s")
        if time_limit <= 0:
            raise ValueError(f"--timeout must be more than zero, got {timeout!r}")
    if endpoint is not None and not endpoint.startswith("opc.tcp://"):
        raise Refused(f'expected an endpoint like "opc.tcp://host:4840", got {endpoint!r}')
    if (config_file is None) != (source_name is None):
        raise Refused("--config and --source go together: -c CONFIG --source NAME")
    if out is not None and not out.parent.is_dir():
        raise Refused(f"{out}: no such directory: {out.parent}")
    source = None
    if config_file is not None and source_name is not None:
        try:
            source = found.pick_source(load_config(config_file).sources, source_name)
        except ValueError as exc:
            raise Refused(f"{config_file}: {exc}") from None
        # URL given: the same security towards another address of the server (a tunnel, say).
        changes: dict[str, object] = {"endpoint": endpoint} if endpoint is not None else {}
        if timeout is not None:
            changes["timeout"] = time_limit
        source = source.model_copy(update=changes)
        endpoint = source.endpoint
        command = f"lineside discover opcua -c {config_file} --source {source_name}"
    elif endpoint is None:
        raise Refused('give an endpoint ("opc.tcp://host:4840") or -c CONFIG --source NAME')
    else:
        command = f"lineside discover opcua {endpoint}"
    address = endpoint  # a str here; a name of its own keeps it one inside the closure below
    # asyncua warns of every ServiceFault (a refused login, say) on stderr; the one line below
    # says it in lineside's words. lineside's own warnings (a certificate pinned) still show.
    quiet_asyncua()

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("connecting", total=None)

        def progress(what: str, done: int, total: int | None) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = run_loop(
            lambda: (
                found.discover(
                    address, root=root, depth=depth, time_limit=time_limit, progress=progress
                )
                if source is None
                else found.discover_source(source, root=root, depth=depth, progress=progress)
            )
        )

    rows, left_out = found.tag_rows(result.variables)
    line = found.summary(result, len(rows), left_out)
    # A CSV per machine folder when the server has several: each is one unit's tags_file.
    files = {out: rows} if out is not None else {}
    groups = found.by_machine(result.variables)
    if out is not None and out_format == "csv" and len(groups) > 1:
        files = {found.machine_path(out, m): found.tag_rows(vs)[0] for m, vs in groups.items()}
    for path, part in files.items():
        text = (
            found.to_csv(part) if out_format == "csv" else found.to_toml(part, f"{command}\n{line}")
        )
        with writing(path):
            path.write_text(text, encoding="utf-8")
    if as_json:
        print_json(
            OpcuaReport(
                endpoint=result.endpoint,
                source=source_name,
                security=result.security,
                root=result.root,
                depth=result.depth,
                nodes_browsed=result.nodes_browsed,
                requests=result.requests,
                variables=[
                    OpcuaVariable(
                        node_id=v.node_id,
                        browse_path=v.browse_path,
                        data_type=v.data_type,
                        access=v.access,
                        array_length=v.array_length,
                        left_out=found.why_left_out(v),
                    )
                    for v in result.variables
                ],
                tags=len(rows),
                tags_file=str(out) if out is not None and out in files else None,
                tags_files={str(p): len(part) for p, part in files.items()},
            )
        )
    else:
        console.print(line, markup=False, highlight=False)
        for path, part in files.items():
            console.print(f"wrote {path}: {len(part)} tags", markup=False, highlight=False)
    if not result.variables:
        err_console.print(f"lineside: no variables under {result.root}", markup=False)
        raise typer.Exit(EXIT_FAILED)


def certs_create(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for cert.der and key.pem.")],
    uri: Annotated[
        str, typer.Option("--uri", help="The application URI, e.g. urn:acme:lineside:edge-1.")
    ],
    days: Annotated[int, typer.Option("--days", help="How long it is valid.")] = 365,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="DNS name in the certificate (this host's).")
    ] = None,
    key_password_env: Annotated[
        str | None,
        typer.Option("--key-password-env", help="Encrypt the key with this variable's value."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Create a self-signed client certificate and key (mode 0600) for OPC UA security."""
    import os

    with needs("OPC UA", "opcua"):
        from connectors.opcua import certs

    passphrase = None
    if key_password_env is not None:
        passphrase = os.environ.get(key_password_env)
        if not passphrase:
            raise Refused(
                f"--key-password-env: the environment variable {key_password_env} is unset"
            )
    with refusing(certs.CertificateError):
        made = certs.create(
            out, uri, days=days, hostname=hostname, passphrase=passphrase, overwrite=force
        )
    console.print(made.application_uri, markup=False, highlight=False)
    err_console.print(
        f"wrote {made.certificate} (thumbprint {made.thumbprint}, valid until "
        f"{made.not_after:%Y-%m-%d}) and {made.private_key}; in the source: "
        f'certificate = "{made.certificate}", private_key = "{made.private_key}", '
        f'application_uri = "{made.application_uri}"',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
