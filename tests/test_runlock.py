"""One process per run folder (tcurseg/engine/runlock.py): a second process is refused in one line naming the
folder and the holder; a lock left by a dead process is taken over with a note."""

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tcurseg.engine.errors import RunFolderBusy
from tcurseg.engine.runlock import LOCK_NAME, run_lock

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tcurseg.engine.runlock import run_lock
    with run_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy) as refused:
            with run_lock(tmp_path):
                pass
        message = str(refused.value)
        assert message.startswith(f"{tmp_path} is in use by process {holder.pid} on {socket.gethostname()}")
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with run_lock(tmp_path):  # the kernel dropped the dead holder's lock
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then"}))
    with caplog.at_level(logging.WARNING, logger="tcurseg.engine.runlock"), run_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert any("process 999999 on gone" in r.getMessage() for r in caplog.records)
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: the next holder finds no stale note
