$


aqid


	aqi_level