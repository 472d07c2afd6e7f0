#!/usr/bin/env bash
# The whole workflow on the public MR-TRUS data (../shared/data/mrus_prostate layout),
# from the headless CLI.  Budgets are the CPU ones (about 95 minutes in all on 2 idle cores: 30 to train,
# 12 folds of 5 to cross-validate, a few for the rest); on a GPU raise --minutes or use --preset paper.
# Run from the repository root with the package installed.  No --geometry: the data's headers hold no scanner
# positions, so every command takes centred, and says so.
set -euo pipefail
DATA=${DATA:-../shared/data/mrus_prostate}
OUT=${OUT:-runs/mrus}
mkdir -p "$OUT"

# 1. train on all pairs with the CPU preset (30 minutes), volume centres aligned
napari-labelreg train --data "$DATA" --out "$OUT/net" --minutes 30

# 2. per-pair TRE and gland Dice (on the training pairs here: use crossval for honest figures)
napari-labelreg evaluate --model "$OUT/net" --data "$DATA" --out "$OUT/net_results.csv"

# 3. register one pair: ddf.nii.gz (the whole transform, TRUS world -> MR world, for ITK and 3D Slicer),
#    warped.nii.gz, warped_labels.nii.gz, inverse_ddf.nii.gz, registration.json
napari-labelreg register --model "$OUT/net" --out "$OUT/obs000" --inverse \
    --moving "$DATA/moving_images/obs000.nii.gz" --fixed "$DATA/fixed_images/obs000.nii.gz" \
    --moving-labels "$DATA/moving_labels/obs000.nii.gz"

# 3b. MR targets (world mm on the MR: columns label,x,y,z) onto the ultrasound, through that registration
printf 'label,x,y,z\ncentre,0,0,0\n' > "$OUT/targets.csv"   # put your own targets here
napari-labelreg map-points --registration "$OUT/obs000" --points "$OUT/targets.csv" --to fixed \
    --out "$OUT/targets_on_us.csv" || echo "(a target outside the TRUS field of view is refused, by label)"

# 4. the paper's protocol: label database, 12-fold patient-level cross-validation,
#    the gland-centroid reference, and a paired comparison
napari-labelreg db import "$DATA" --db "$OUT/labels.db"
napari-labelreg crossval --db "$OUT/labels.db" --folds 12 --out "$OUT/cv" --minutes 5
napari-labelreg baseline --method centroid --db "$OUT/labels.db" --out "$OUT/centroid"
napari-labelreg compare "$OUT/cv" "$OUT/centroid" --plot "$OUT/compare.png"

# 5. inspect a registration in napari (needs a display)
# napari-labelreg annotate --db "$OUT/labels.db"
