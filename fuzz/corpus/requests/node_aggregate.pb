
air_quality&$


aqid


	aqi_levelcity"pm25"observed_at