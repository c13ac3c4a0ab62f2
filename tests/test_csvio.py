"""The COMP5329 reader: the caption quirk and the usual damage real files carry."""

import pytest

from capfuse.data.csvio import read_split
from capfuse.data.problems import DataError


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_caption_quirk_commas_and_quotes(tmp_path):
    path = write(
        tmp_path, "train.csv", b'ImageID,Labels,Caption\n0.jpg,1 19,A "vintage" bus, parked, by a "stop" sign\n'
    )
    rows, problems = read_split(path, "train")
    assert problems == [] and len(rows) == 1
    assert rows[0].labels == [1, 19]
    assert rows[0].caption == 'A "vintage" bus, parked, by a "stop" sign'
    assert rows[0].line == 2 and rows[0].usable


def test_bom_crlf_blank_lines_and_stray_spaces(tmp_path):
    data = b"\xef\xbb\xbfImageID , Caption\r\n 5.jpg , a cat, a dog \r\n\r\n6.jpg,x\r\n\r\n   \r\n"
    rows, _ = read_split(write(tmp_path, "test.csv", data), "test")
    assert [(r.image_id, r.caption, r.line) for r in rows] == [("5.jpg", "a cat, a dog", 2), ("6.jpg", "x", 4)]


def test_labels_with_extra_spaces_are_sorted_and_deduplicated(tmp_path):
    rows, _ = read_split(write(tmp_path, "train.csv", b"ImageID,Labels,Caption\n1.jpg,  19   3 3 ,cap\n"), "train")
    assert rows[0].labels == [3, 19]


def test_fully_quoted_caption_is_unquoted_but_inner_quotes_are_kept(tmp_path):
    data = b'ImageID,Labels,Caption\n1.jpg,2,"a ""red"" car, fast"\n2.jpg,2,"red" car and "blue" bus\n'
    rows, _ = read_split(write(tmp_path, "train.csv", data), "train")
    assert rows[0].caption == 'a "red" car, fast'
    assert rows[1].caption == '"red" car and "blue" bus'


@pytest.mark.parametrize(
    "labels, code", [("1 x", "bad_label"), ("", "no_labels"), ("  ", "no_labels"), ("-3", "bad_label")]
)
def test_bad_labels_name_the_line(tmp_path, labels, code):
    data = f"ImageID,Labels,Caption\n0.jpg,1,ok\n1.jpg,{labels},cap\n".encode()
    rows, _ = read_split(write(tmp_path, "train.csv", data), "train")
    assert rows[0].usable and not rows[1].usable
    (problem,) = rows[1].problems
    assert problem.code == code and problem.line == 3 and problem.image_id == "1.jpg"
    assert "train.csv:3" in str(problem)


def test_malformed_train_row_and_empty_caption(tmp_path):
    data = b"ImageID,Labels,Caption\n0.jpg\n1.jpg,4,\n"
    rows, _ = read_split(write(tmp_path, "train.csv", data), "train")
    assert [p.code for p in rows[0].problems] == ["malformed_row"] and not rows[0].usable
    assert [p.code for p in rows[1].problems] == ["empty_caption"] and rows[1].usable


def test_test_row_without_comma_is_kept(tmp_path):
    rows, _ = read_split(write(tmp_path, "test.csv", b"ImageID,Caption\n7.jpg\n"), "test")
    assert rows[0].image_id == "7.jpg" and rows[0].caption == "" and rows[0].usable


def test_bad_bytes_are_a_warning_not_a_lost_row(tmp_path):
    data = b"ImageID,Caption\n1.jpg,a caf\xe9\n2.jpg,fine\n"
    rows, _ = read_split(write(tmp_path, "test.csv", data), "test")
    assert len(rows) == 2 and rows[0].caption == "a caf\ufffd"
    assert [(p.code, p.severity, p.line) for p in rows[0].problems] == [("bad_encoding", "warning", 2)]


def test_bad_header_and_missing_file_are_errors(tmp_path):
    with pytest.raises(DataError, match=r"train.csv:1: bad header"):
        read_split(write(tmp_path, "train.csv", b"id,labels\n1.jpg,2\n"), "train")
    with pytest.raises(DataError, match="not found"):
        read_split(tmp_path / "nope.csv", "test")
    with pytest.raises(DataError, match="empty"):
        read_split(write(tmp_path, "test.csv", b"\n\n"), "test")
