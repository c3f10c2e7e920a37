"""Names of the ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), in the benchmark's order."""

# The 15 corruptions the mean corruption error (mCE) averages, in ImageNet-C's order.
COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
          "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
# The 4 held-out ("validation") corruptions ImageNet-C ships besides them; not part of the mCE.
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = COMMON + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)
