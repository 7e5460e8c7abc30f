import logging

from nas.logs import console_logging, run_log


def test_run_log_gets_debug_records_while_the_console_shows_info(tmp_path, capsys):
    log = logging.getLogger("nas.test_logs")
    with console_logging(0), run_log(tmp_path / "run") as path:
        log.debug("detail only in the file")
        log.info("status for both")
    log.info("after the run: in neither")
    text = path.read_text()
    assert "detail only in the file" in text and "status for both" in text and "after the run" not in text
    err = capsys.readouterr().err
    assert "status for both" in err and "detail only" not in err
    assert not any(getattr(h, "baseFilename", None) == str(path) for h in logging.getLogger().handlers)
