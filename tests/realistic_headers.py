"""Headers that real modalities write and that a strict library refuses (issue #44): each a
hand film of one made-up patient with one such header."""

from __future__ import annotations

import io

import numpy as np

NAMES = ("japanese", "korean", "sex U", "sex m", "sex space M", "study date 20200230",
         "birth date with dashes", "invalid study time", "long name", "CR LF in LO",
         "NUL byte", "age 10Y without dates")


def variant(name: str, seed: int = 7) -> bytes:
    """The DICOM file's bytes of a 12-bit DX film with the header `name`."""
    from boneage.data.dicom import film_dataset
    from boneage.data.synthetic import synthetic_film

    film, _ = synthetic_film(height=320, width=256, seed=seed)
    tags = {"PatientName": "Doe^Jane", "PatientID": "PID-4711", "AccessionNumber": "ACC-4711",
            "PatientSex": "F", "PatientBirthDate": "20100301", "StudyDate": "20200615"}
    ds = film_dataset(film.astype(np.uint16) * 16, 12, **tags)
    if name == "japanese":  # PS3.5 H.3.1's example name, ISO 2022 with JIS X 0208
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    elif name == "korean":  # PS3.5 I.2's example, ISO 2022 with KS X 1001
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 149"]
        ds.PatientName = "Hong^Gildong=洪^吉洞=홍^길동"
    elif name.startswith("sex "):
        ds.PatientSex = {"sex U": "U", "sex m": "m", "sex space M": " M"}[name]
    elif name == "study date 20200230":
        ds.StudyDate = "20200230"
    elif name == "birth date with dashes":
        ds.PatientBirthDate = "2010-03-01"
    elif name == "invalid study time":
        ds.StudyTime = "25:61"
    elif name == "long name":
        ds.PatientName = "A" * 77
    elif name == "CR LF in LO":
        ds.add_new(0x00081030, "LO", "Hand\r\nleft")  # StudyDescription
        ds.add_new(0x00100020, "LO", "PID\r\n4711")  # PatientID
    elif name == "NUL byte":
        ds.add_new(0x00080050, "SH", "ACC\x004711")  # AccessionNumber
    elif name == "age 10Y without dates":
        del ds.PatientBirthDate
        ds.PatientAge = "10Y"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
