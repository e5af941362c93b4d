"""Names the three raw files are written with: the format, in one place, importing nothing.

The cleaning, the feature builder, the bucket layout and the sample generator all read them
from here.
"""

from __future__ import annotations

RAW_FILES = ("precio_leche.csv", "precipitaciones.csv", "banco_central.csv")
MONTHS_ES = ("Ene", "Feb", "Mar", "Abr", "May", "Jun", "Jul", "Ago", "Sep", "Oct", "Nov", "Dic")
PRICE = "Precio_leche"
REGIONS = (
    "Coquimbo",
    "Valparaiso",
    "Metropolitana_de_Santiago",
    "Libertador_Gral__Bernardo_O_Higgins",
    "Maule",
    "Biobio",
    "La_Araucania",
    "Los_Rios",
)
IMACEC_SERIES = (
    "Imacec_empalmado",
    "Imacec_produccion_de_bienes",
    "Imacec_minero",
    "Imacec_industria",
    "Imacec_resto_de_bienes",
    "Imacec_comercio",
    "Imacec_servicios",
    "Imacec_a_costo_de_factores",
    "Imacec_no_minero",
)
# The national-accounts series whose names contain PIB, in file order (PIB itself is last).
PIB_SERIES = (
    "PIB_Agropecuario_silvicola",
    "PIB_Pesca",
    "PIB_Mineria",
    "PIB_Mineria_del_cobre",
    "PIB_Otras_actividades_mineras",
    "PIB_Industria_Manufacturera",
    "PIB_Alimentos",
    "PIB_Bebidas_y_tabaco",
    "PIB_Textil",
    "PIB_Maderas_y_muebles",
    "PIB_Celulosa",
    "PIB_Refinacion_de_petroleo",
    "PIB_Quimica",
    "PIB_Minerales_no_metalicos_y_metalica_basica",
    "PIB_Productos_metalicos",
    "PIB_Electricidad",
    "PIB_Construccion",
    "PIB_Comercio",
    "PIB_Restaurantes_y_hoteles",
    "PIB_Transporte",
    "PIB_Comunicaciones",
    "PIB_Servicios_financieros",
    "PIB_Servicios_empresariales",
    "PIB_Servicios_de_vivienda",
    "PIB_Servicios_personales",
    "PIB_Administracion_publica",
    "PIB_a_costo_de_factores",
    "PIB",
)
IVCM = "Indice_de_ventas_comercio_real_no_durables_IVCM"
