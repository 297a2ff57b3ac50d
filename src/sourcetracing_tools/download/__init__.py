"""Download and unpack the corpora of the pipeline: MLAAD v5, its source-tracing protocols, MUSAN, RIRS_NOISES.

Every resource is an entry of :data:`~.resources.REGISTRY` (files with their URLs and published checksums, the
archive to unpack, and the folder it lands in). The steps are safe to re-run:

* downloads go to ``<file>.part`` and resume with an HTTP ``Range`` request after an interruption;
* checksums are verified where one is published (MLAAD ships an md5 list, OpenSLR publishes md5 sums); a
  mismatch deletes the file and downloads it once more, then fails with both sums in the message;
* archives are unpacked into a staging folder, checked member by member (no absolute paths, no ``..``, no
  links that leave the folder), then moved into the layout the configs expect, and a marker file
  ``.extracted-<name>`` is written; a resource with a marker is not downloaded or unpacked again.

Final layout under ``data/`` (the configs' defaults)::

    data/MLAAD_v5/fake/<lang>/<model_dir>/*.wav
    data/MLAAD_v5_protocols/{train,dev,eval}.csv
    data/musan/{music,noise,speech}/
    data/RIRS_NOISES/{simulated_rirs,real_rirs_isotropic_noises,pointsource_noises}/
    data/downloads/            # the archives themselves (``--delete-archives`` removes them)

URLs can be redirected to a mirror with ``--base-url [name=]URL`` or the environment variables
``SOURCETRACING_BASE_URL`` (all resources) and ``SOURCETRACING_<NAME>_URL`` (one resource); a base URL
is joined with each file name.

Modules, in the order a run uses them:

* :mod:`.resources`: the registry (URLs, checksums, targets) and the base-URL / environment overrides;
* :mod:`.transfer`: HTTP download with resume (``Range``), retries, mirror fallback and a disk-space check;
* :mod:`.checksums`: md5 lists, file digests, verification stamps, and ``ensure_file`` (fetch + verify);
* :mod:`.archives`: safe extraction of zip, tar and split-zip (7-Zip) archives;
* :mod:`.install`: one resource end to end (download, verify, unpack, move into place, marker) and ``run``;
* :mod:`.cli`: the command line of ``scripts/download_resources.py``.
"""
