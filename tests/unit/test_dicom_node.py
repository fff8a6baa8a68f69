"""The DICOM node and the DICOM results, against the real parts: Orthanc as the PACS, dcmtk's
storescu / echoscu as a modality and storescp as a destination, dciodvfy as the judge of every
SR and SC written. Each is started here on 127.0.0.1 and skipped where its Debian package is
absent (.ci/run installs them)."""

from __future__ import annotations

import json
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from tests.dicom_helpers import (  # noqa: E402
    ROUTING,
    SECRETS,
    Node,
    StoreSCP,
    _listening,
    errors_of,
    films,
    free_port,
    measured,
    predicted,
    storescu,
    texts,
    tool,
    wait_for,
)
from tests.helpers import dicom_bytes, write_dicom  # noqa: E402


# ------------------------------------------------------------------------- the results
def test_results_are_valid_dicom_in_the_films_own_study(model_path, tmp_path):
    import pydicom

    from boneage.cli import main

    film = films(tmp_path / "in", 1)[0]
    assert main(["predict", str(film), "--model", str(model_path), "--dicom-out",
                 str(tmp_path / "out"), "--format", "json", "--out",
                 str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name[:3] for p in written] == ["SC_", "SR_"]
    source = pydicom.dcmread(film)
    sc, sr = (pydicom.dcmread(p) for p in written)
    for ds in (sc, sr):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert (ds.PatientID, ds.AccessionNumber) == ("PID-4711", "ACC-4711")
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert errors_of(Path(ds.filename)) == []
    assert sc.SeriesInstanceUID != sr.SeriesInstanceUID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert abs(measured(sr, "85151-9") - result["bone_age_months"]) < 0.1
    assert abs(measured(sr, "121033") - result["chronological_age_months"]) < 0.1
    assert abs(measured(sr, "BA-SDS") - result["sds"]) < 0.01
    assert measured(sr, "BA-LOW90") is None or measured(sr, "BA-LOW90") < measured(
        sr, "85151-9")
    refs = str(sr.CurrentRequestedProcedureEvidenceSequence)
    assert source.SOPInstanceUID in refs
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.SamplesPerPixel == 3 and sc.Rows >= 512
    # the picture: the film on the left at its own shape, a panel of text on the right
    assert sc.Columns > sc.Rows * 256 / 320
    # the same film read again gives the same instances (a result sent twice is one)
    assert main(["predict", str(film), "--model", str(model_path), "--dicom-out",
                 str(tmp_path / "again"), "--format", "json", "--out",
                 str(tmp_path / "r2.json")]) == 0
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [p.name for p in written]


@pytest.mark.parametrize("case", ["sex O", "chest", "unreadable pixels"])
def test_a_film_not_assessed_says_why_in_both_results(model_path, tmp_path, case):
    import pydicom

    from boneage.inference.api import load_model
    from boneage.inference.dicom_results import assess, assessment_files

    film, _ = synthetic_film(height=320, width=256, seed=3)
    pixels = film.astype(np.uint16) * 16
    if case == "sex O":
        path = write_dicom(tmp_path / "f.dcm", pixels, sex="O")
    else:
        path = write_dicom(tmp_path / "f.dcm", pixels)
        ds = pydicom.dcmread(path)
        if case == "chest":
            ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
        else:
            ds.PixelData = ds.PixelData[:100]
        ds.save_as(path)
    model = load_model(model_path)
    a = assess(model, path.read_bytes(), "f.dcm")
    assert a.result is None and a.reason
    assert {"sex O": "PatientSex", "chest": "not a hand",
            "unreadable pixels": "pixel data"}[case] in a.reason
    for name, data in assessment_files(model, a).items():
        (tmp_path / name).write_bytes(data)
        assert errors_of(tmp_path / name) == []
    sr = pydicom.dcmread(next(tmp_path.glob("SR_*.dcm")))
    assert measured(sr, "85151-9") is None
    said = texts(sr)
    assert "Not assessed" in said and any(a.reason in t for t in said)


def test_rest_route_returns_both_results_for_a_dicom_film(model_path, tmp_path):
    from fastapi.testclient import TestClient

    from boneage.inference.api import load_model
    from boneage.service.app import create_app

    film = films(tmp_path, 1)[0]
    with TestClient(create_app(load_model(model_path))) as client:
        r = client.post("/v1/dicom", files={"file": ("film.dcm", film.read_bytes())})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip"
        names = zipfile.ZipFile(__import__("io").BytesIO(r.content)).namelist()
        assert sorted(n[:3] for n in names) == ["SC_", "SR_"]
        png = (tmp_path / "f.png")
        import cv2

        cv2.imwrite(str(png), synthetic_film(height=300, width=240, seed=1)[0])
        r = client.post("/v1/dicom", files={"file": ("f.png", png.read_bytes())},
                        data={"sex": "F"})
        assert r.status_code == 415 and "DICOM film" in r.json()["error"]


# --------------------------------------------------------------------------- the node
def test_the_spool_releases_results_only_for_films_that_left_incoming(tmp_path):
    """A node killed between staging a film's results and releasing them: on restart the
    results of a film still waiting are dropped (it is assessed again), those of a film that
    left incoming/ go to the outbox; nothing is sent twice for a film assessed twice."""
    from boneage.dicomnode.spool import Spool

    spool = Spool(tmp_path / "s")
    waiting = spool.receive("1.2.3", b"film one")
    done = spool.receive("1.2.4", b"film two")
    for film in (waiting, done):
        stage = spool.staging / film.stem
        stage.mkdir()
        (stage / f"SR_{film.stem}.9.dcm").write_bytes(b"sr")
    done.unlink()  # killed after removing the film, before releasing its results
    assert Spool(tmp_path / "s").recover() == 1
    assert [p.name for p in spool.results()] == ["SR_1.2.4.9.dcm"]
    assert not list(spool.staging.iterdir()) and [p.name for p in spool.films()] == ["1.2.3.dcm"]
    released = spool.post(waiting, {"SR_1.2.3.9.dcm": b"sr", "SC_1.2.3.9.dcm": b"sc"})
    assert [p.name for p in released] == ["SC_1.2.3.9.dcm", "SR_1.2.3.9.dcm"]
    assert not spool.films() and len(spool.results()) == 3


def test_arguments_are_checked_before_the_node_starts(tmp_path, capsys):
    from boneage.cli import main
    from boneage.dicomnode.node import Destination

    assert Destination.parse("ORTHANC@127.0.0.1:4242").port == 4242
    for bad in ("ORTHANC@127.0.0.1", "127.0.0.1:4242", "A@h:99999", "WAY_TOO_LONG_AE_TITLE@h:1"):
        with pytest.raises(BoneAgeError, match="--send-to"):
            Destination.parse(bad)
    for argv in (["--send-to", "X@h:1", "--uid-root", "1.2.x."],
                 ["--send-to", "nowhere"]):
        assert main(["dicom-node", "--spool", str(tmp_path / "s"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")
    (tmp_path / "file").write_text("")
    assert main(["dicom-node", "--spool", str(tmp_path / "file"), "--send-to", "X@h:1"]) == 2
    assert "spool" in capsys.readouterr().err


def test_orthanc_sends_a_film_and_gets_both_results_in_the_same_study(model_path, tmp_path):
    import urllib.request

    import pydicom

    orthanc = tool("Orthanc")
    dicom_port, http_port = free_port(), free_port()
    node = Node(model_path, tmp_path / "spool", f"ORTHANC@127.0.0.1:{dicom_port}",
                tmp_path / "node.log")
    config = {"Name": "test", "StorageDirectory": str(tmp_path / "db"),
              "IndexDirectory": str(tmp_path / "db"), "DicomAet": "ORTHANC",
              "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [],
              "DicomModalities": {"boneage": ["BONEAGE", "127.0.0.1", node.port],
                                  "modality": ["MODALITY", "127.0.0.1", free_port()]},
              "LuaScripts": [str(ROUTING)]}
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    pacs = subprocess.Popen([orthanc, str(tmp_path / "orthanc.json")],
                            stdout=(tmp_path / "orthanc.log").open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"

    def rest(path: str, data: bytes | None = None) -> object:
        req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    try:
        wait_for(lambda: _listening(http_port), 30, "Orthanc")
        node.start()
        film, routed, sibling = films(tmp_path / "in", 3)
        ds = pydicom.dcmread(sibling)  # a second film of the same study and series
        first = pydicom.dcmread(film)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, first.SeriesInstanceUID
        ds.save_as(sibling)
        uploaded = [rest("/instances", f.read_bytes()) for f in (film, sibling)]  # not routed
        job = rest("/modalities/boneage/store",
                   json.dumps({"Resources": [u["ID"] for u in uploaded]}).encode())
        assert job["InstancesCount"] == 2 and job["FailedInstancesCount"] == 0
        study = rest(f"/instances/{uploaded[0]['ID']}/study")["ID"]
        # each film its own SR and SC: a UID derived from the study would make the PACS keep
        # one report of the two
        instances = wait_for(lambda: (lambda i: i if len(i) == 6 else None)(
            rest(f"/studies/{study}/instances")), 120, "both films' results in Orthanc")
        got: dict[str, list] = {}
        for inst in instances:
            data = rest(f"/instances/{inst['ID']}/file")
            ds = pydicom.dcmread(__import__("io").BytesIO(data))
            (tmp_path / f"{ds.Modality}{len(got.get(ds.Modality, []))}.dcm").write_bytes(data)
            got.setdefault(ds.Modality, []).append(ds)
        assert {k: len(v) for k, v in got.items()} == {"DX": 2, "SR": 2, "OT": 2}
        refs = sorted(str(sr.CurrentRequestedProcedureEvidenceSequence[0]
                          .ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
                          .ReferencedSOPInstanceUID) for sr in got["SR"])
        assert refs == sorted(str(d.SOPInstanceUID) for d in got["DX"])
        got = {k: v[0] if k != "SR" else next(
            sr for sr in v if str(first.SOPInstanceUID) in str(sr)) for k, v in got.items()}
        for kind in ("SR0", "SR1", "OT0", "OT1"):
            assert errors_of(tmp_path / f"{kind}.dcm") == []
        assert abs(measured(got["SR"], "85151-9")
                   - predicted(model_path, film)["bone_age_months"]) < 0.1
        # a modality sends a hand film to Orthanc over DICOM: docs/orthanc/route-hands.lua
        # forwards it to the node, and its results come back into its study
        sent = subprocess.run([tool("storescu"), "-aet", "MODALITY", "-aec", "ORTHANC",
                               "127.0.0.1", str(dicom_port), str(routed)], capture_output=True)
        assert sent.returncode == 0, sent.stderr
        uid = pydicom.dcmread(routed).StudyInstanceUID
        found = wait_for(lambda: rest("/tools/lookup", uid.encode()), 30, "the routed film")
        wait_for(lambda: len(rest(f"/studies/{found[0]['ID']}/instances")) == 3, 120,
                 "the routed film's results")
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(20)
    log = (tmp_path / "node.log").read_text()
    assert "received" in log and "sent SR_" in log
    assert not [s for s in SECRETS if s in log]


def test_nothing_is_lost_when_the_destination_is_down_or_the_node_is_killed(model_path,
                                                                            tmp_path):
    dest = StoreSCP(tmp_path / "dest", tmp_path / "storescp.log")
    node = Node(model_path, tmp_path / "spool", f"DEST@127.0.0.1:{dest.port}",
                tmp_path / "node.log").start()
    outbox, incoming = tmp_path / "spool" / "outbox", tmp_path / "spool" / "incoming"
    batch = films(tmp_path / "in", 5)
    try:
        sent = storescu(node.port, *batch)
        assert sent.returncode == 0, sent.stderr  # every film acknowledged at once
        # the destination is down: results wait in the outbox; kill -9 mid-batch
        wait_for(lambda: len(list(outbox.glob("*.dcm"))) >= 2, 60, "a first result")
        node.kill()
        left = len(list(incoming.glob("*.dcm")))
        node.start()
        wait_for(lambda: not list(incoming.glob("*.dcm"))
                 and len(list(outbox.glob("*.dcm"))) == 10, 120, "every result in the outbox")
        time.sleep(2)  # a few failed tries, then the destination comes back
        dest.start()
        wait_for(lambda: len(dest.files()) == 10 and not list(outbox.glob("*.dcm")), 60,
                 "every result at the destination")
    finally:
        node.stop()
        dest.stop()
    assert len(dest.stores()) == 10  # none twice
    log = (tmp_path / "node.log").read_text()
    assert "not reachable" in log and "resuming" in log
    assert not [s for s in SECRETS if s in log]
    print(f"{left} film(s) were still waiting when the node was killed")


def test_hostile_senders_get_a_status_or_a_not_assessed_result(model_path, tmp_path):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import (
        DigitalXRayImageStorageForPresentation,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    )

    dest = StoreSCP(tmp_path / "dest", tmp_path / "storescp.log").start()
    node = Node(model_path, tmp_path / "spool", f"DEST@127.0.0.1:{dest.port}",
                tmp_path / "node.log", "--allow-aet", "MODALITY",
                env={"BONEAGE_MAX_INFLATED_BYTES": str(8 << 20),
                     "BONEAGE_MAX_DICOM_BYTES": str(64 << 20)}).start()
    film, _ = synthetic_film(height=320, width=256, seed=5)
    items = {
        "garbage": None,
        "deflated bomb": dicom_bytes(np.zeros((512, 512)), frames=64, deflate=True),
        "claimed frames bomb": dicom_bytes(np.zeros((256, 256)), NumberOfFrames=100000),
    }
    colour = pydicom.dcmread(write_dicom(tmp_path / "c.dcm", film.astype(np.uint16)))
    colour.SOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
    colour.file_meta.MediaStorageSOPClassUID = colour.SOPClassUID
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "RGB"
    colour.PlanarConfiguration, colour.NumberOfFrames = 0, 2
    colour.BitsAllocated, colour.BitsStored, colour.HighBit = 8, 8, 7
    rgb = np.repeat(film[..., None], 3, axis=2).astype(np.uint8)
    colour.PixelData = np.stack([rgb, rgb]).tobytes()
    colour.save_as(tmp_path / "colour.dcm", enforce_file_format=True)
    statuses = {}
    try:
        assert not node.echo("STRANGER")  # not on the allow-list: association rejected
        assert node.echo("MODALITY")
        ae = AE(ae_title="MODALITY")
        for cls in (DigitalXRayImageStorageForPresentation,
                    MultiFrameTrueColorSecondaryCaptureImageStorage):
            for syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
                ae.add_requested_context(cls, syntax)  # one context each
        assoc = ae.associate("127.0.0.1", node.port, ae_title="BONEAGE")
        assert assoc.is_established
        _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are
        try:
            for name, data in items.items():
                path = tmp_path / name.replace(" ", "_")
                if data is None:  # a valid file meta group, then bytes that are no data set
                    good = dicom_bytes(np.zeros((64, 64)))
                    end = 132 + 12 + int.from_bytes(good[140:144], "little")
                    data = good[:end] + np.random.default_rng(0).integers(
                        0, 256, 4000, dtype=np.uint8).tobytes()
                path.write_bytes(data)
                statuses[name] = assoc.send_c_store(path).Status
            statuses["multi-frame colour"] = assoc.send_c_store(tmp_path / "colour.dcm").Status
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            assoc.release()
        # a header claiming more pixels than the limit is refused at receipt (docs/dicom.md)
        assert statuses == {"garbage": 0xC210, "deflated bomb": 0xA700,
                            "claimed frames bomb": 0xA700, "multi-frame colour": 0x0000}
        # a non-image SOP class: no presentation context for it
        wait_for(lambda: len(dest.files()) == 2, 120, "the colour film's results")
        sr = next(p for p in dest.files() if pydicom.dcmread(p).Modality == "SR")
        refused = storescu(node.port, sr, aet="MODALITY")
        assert refused.returncode != 0
        assert node.echo("MODALITY")  # still serving
    finally:
        node.stop()
        dest.stop()
    said = [texts(pydicom.dcmread(p)) for p in dest.files() if pydicom.dcmread(p).Modality
            == "SR"]
    assert len(said) == 1 and "Not assessed" not in said[0]
    assert any("colour DICOM" in x for x in said[0])


def test_compressed_and_deflated_films_are_read_and_other_hosts_refused(model_path, tmp_path):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGLSLossless, RLELossless
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    plain = films(tmp_path / "in", 3)
    sent = []
    for path, syntax in zip(plain, (RLELossless, JPEGLSLossless, DeflatedExplicitVRLittleEndian),
                            strict=True):
        ds = pydicom.dcmread(path)
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax)
        out = tmp_path / f"{syntax.name.split()[0]}.dcm"
        ds.save_as(out, enforce_file_format=True)
        assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == syntax
        sent.append(out)
    dest = StoreSCP(tmp_path / "dest", tmp_path / "storescp.log").start()
    node = Node(model_path, tmp_path / "spool", f"DEST@127.0.0.1:{dest.port}",
                tmp_path / "node.log", "--allow-host", "127.0.0.1").start()
    try:
        for path, option in zip(sent, ("-xr", "-xt", "-xd"), strict=True):  # each as it is
            done = storescu(node.port, path, propose=(option,))
            assert done.returncode == 0, done.stderr
        wait_for(lambda: len(dest.files()) == 6, 120, "three films' results")
        said = [texts(pydicom.dcmread(p)) for p in dest.files()
                if pydicom.dcmread(p).Modality == "SR"]
        assert len(said) == 3 and not [t for t in said if "Not assessed" in t]
    finally:
        node.stop()
        dest.stop()
    elsewhere = Node(model_path, tmp_path / "spool2", f"DEST@127.0.0.1:{dest.port}",
                     tmp_path / "node2.log", "--allow-host", "10.9.9.9").start()
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", elsewhere.port, ae_title="BONEAGE")
        assert not assoc.is_established  # closed at accept, before any PDU is read
    finally:
        elsewhere.stop()
    assert "connection from 127.0.0.1 closed: host not in the allow-list" in (
        tmp_path / "node2.log").read_text()
