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


def test_root_logger_chatter_of_onnxruntime_is_dropped_but_its_warnings_kept(tmp_path, capsys):
    """ONNX Runtime's quantizer logs a line per widened weight scale through the root logger
    (megabytes per table build); only that package's sub-warning root records are dropped."""
    root = logging.getLogger()
    quantizer = "/venv/lib/python3.11/site-packages/onnxruntime/quantization/qdq_quantizer.py"
    with console_logging(0), run_log(tmp_path / "run") as path:
        for level, text, where in ((logging.INFO, "Increased scale[3]", quantizer),
                                   (logging.WARNING, "quantizer warning", quantizer),
                                   (logging.INFO, "a root record of ours", "/repo/nas/search.py")):
            root.handle(root.makeRecord("root", level, where, 1, text, None, None))
    for text in (path.read_text(), capsys.readouterr().err):
        assert "Increased scale" not in text
        assert "quantizer warning" in text and "a root record of ours" in text
