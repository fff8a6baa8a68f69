-- Orthanc routing rule: every hand or wrist radiograph (CR or DX) that a modality sends to
-- Orthanc over DICOM is forwarded to the boneage node, declared in Orthanc's configuration
-- as the modality "boneage":
--   "DicomModalities": { "boneage": [ "BONEAGE", "10.0.0.7", 11112 ] }
-- and loaded with  "LuaScripts": [ "/etc/orthanc/route-hands.lua" ].
-- The node's results (SR, and OT for the Secondary Capture) never match, so nothing loops.
-- Used as is by tests/unit/test_dicom_node.py.
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality'] or ''
  local part = string.upper(tags['BodyPartExamined'] or '')
  local hand = string.find(part, 'HAND') or string.find(part, 'WRIST')
  if (modality == 'CR' or modality == 'DX') and hand
     and origin['RequestOrigin'] == 'DicomProtocol' then
    SendToModality(instanceId, 'boneage')
  end
end
